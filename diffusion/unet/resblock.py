"""Convolutional UNet pieces: the timestep-conditioned ResBlock and the 2x down/upsamplers.

Submodule indices mirror the LDM checkpoint keys (`in_layers.2`, `emb_layers.1`, `out_layers.3`, `op`, `conv`),
which is why parameter-free slots (activation, the p=0 dropout) are kept as placeholders.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import add_


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the projected timestep embedding, GroupNorm-SiLU-conv, plus a (1x1) skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out_channels), nn.SiLU(), nn.Identity(),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = add_(h, self.emb_layers(emb).to(h.dtype)[:, :, None, None])
        return add_(self.out_layers(h), self.skip_connection(x))  # = skip + out (addition commutes exactly)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (odd sizes round up, matching the skip sizes the decoder side expects)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x (or to the size of the skip it will be concatenated with), then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size=None) -> torch.Tensor:
        if size is None:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.conv(x)
