"""`comfy.ops`: the layer classes packs build modules with.

ComfyUI's ops cast weights per call when storage and compute dtypes differ. Tessera keeps weights in the compute
dtype (model_management), so its operation sets are torch's own layers; `cast_bias_weight` moves a layer's weight
and bias to the input's device and dtype, for packs that call it in their own forwards.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn


def cast_bias_weight(s: nn.Module, input: Optional[torch.Tensor] = None, dtype: Any = None, device: Any = None,
                     bias_dtype: Any = None, offloadable: bool = False) -> tuple:
    if input is not None:
        dtype = input.dtype if dtype is None else dtype
        device = input.device if device is None else device
    weight = s.weight.to(device=device, dtype=dtype)
    bias = None if getattr(s, "bias", None) is None else s.bias.to(device=device, dtype=bias_dtype or dtype)
    return (weight, bias, None) if offloadable else (weight, bias)


def uncast_bias_weight(s: nn.Module, weight: Any, bias: Any, offload_stream: Any = None) -> None:
    """Nothing to give back: cast_bias_weight made plain copies."""


def _uninitialised(base: type) -> type:
    """`base` with reset_parameters doing nothing: weights are loaded from a file right after construction."""
    return type(base.__name__, (base,), {"comfy_cast_weights": False, "reset_parameters": lambda self: None,
                                         "__doc__": f"torch.nn.{base.__name__} without weight initialisation."})


class disable_weight_init:  # noqa: N801 - ComfyUI's name
    """Layer classes whose weights are not initialised (they are loaded from files right after)."""
    Linear = _uninitialised(nn.Linear)
    Conv1d = _uninitialised(nn.Conv1d)
    Conv2d = _uninitialised(nn.Conv2d)
    Conv3d = _uninitialised(nn.Conv3d)
    ConvTranspose2d = _uninitialised(nn.ConvTranspose2d)
    GroupNorm = _uninitialised(nn.GroupNorm)
    LayerNorm = _uninitialised(nn.LayerNorm)
    Embedding = _uninitialised(nn.Embedding)

    @classmethod
    def conv_nd(cls, dims: int, *args: Any, **kwargs: Any) -> nn.Module:
        return {1: cls.Conv1d, 2: cls.Conv2d, 3: cls.Conv3d}[dims](*args, **kwargs)


class manual_cast(disable_weight_init):  # noqa: N801 - ComfyUI's name
    """The same layers (weights already live in the compute dtype here)."""


def pick_operations(weight_dtype: Any, compute_dtype: Any, load_device: Any = None, disable_fast_fp8: bool = False,
                    fp8_optimizations: bool = False, scaled_fp8: Any = None, model_config: Any = None) -> type:
    return disable_weight_init
