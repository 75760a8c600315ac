"""`comfy.ldm.modules.diffusionmodules.util`: timestep embeddings and layer helpers."""
from __future__ import annotations

import torch
from torch import nn

from diffusion.unet.embeddings import timestep_embedding as _timestep_embedding


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000,
                       repeat_only: bool = False) -> torch.Tensor:
    """Sinusoidal embeddings [N, dim] of timesteps [N] (`repeat_only`: the timestep repeated instead)."""
    if repeat_only:
        return timesteps[:, None].expand(-1, dim)
    return _timestep_embedding(timesteps, dim, max_period)


def zero_module(module: nn.Module) -> nn.Module:
    """The module with every parameter set to zero (ControlNet zero convolutions)."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](*args, **kwargs)


def avg_pool_nd(dims: int, *args, **kwargs) -> nn.Module:
    return {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims](*args, **kwargs)


def linear(*args, **kwargs) -> nn.Module:
    return nn.Linear(*args, **kwargs)


def normalization(channels: int, dtype=None, device=None) -> nn.Module:
    return nn.GroupNorm(32, channels, dtype=dtype, device=device)
