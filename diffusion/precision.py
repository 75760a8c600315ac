"""Which dtype networks compute in on a device: one rule for every network kind, so the UNet, ControlNets and
the rest agree (a ControlNet's residuals are added to the UNet's activations)."""
from __future__ import annotations

import torch


def compute_dtype(device: torch.device, for_vae: bool = False) -> torch.dtype:
    """fp32 on CPU (half precision is slow there). On accelerators fp16, except VAEs, which overflow in fp16:
    bf16 where supported, else fp32."""
    if device.type == "cpu":
        return torch.float32
    if for_vae:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return torch.float16


def weights_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype a network's floating weights are stored in (fp32 when it has none). On a CPU a network computes
    in the dtype it was loaded in: the precision policy chose it when the file was read. A network whose layers
    cast their weights as they run (fp8 storage, weights left in their file) names its `compute_dtype`."""
    named = getattr(module, "compute_dtype", None)
    if isinstance(named, torch.dtype):
        return named
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
