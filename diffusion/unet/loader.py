"""Build a UNetModel straight from checkpoint tensors: detect the config, construct on the meta device, assign.

Constructing on meta skips random initialisation of ~2.6 B parameters (SDXL) and never allocates a second copy:
`load_state_dict(assign=True)` adopts the given tensors (e.g. safetensors memory maps) as the parameters.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .config import UNetConfig, detect_unet_config, strip_unet_prefix
from .model import UNetModel


def unet_from_state_dict(state_dict: Mapping[str, torch.Tensor], config: UNetConfig | None = None, *,
                         dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> UNetModel:
    """UNet from a full checkpoint or a prefix-stripped UNet dict; strict: every key used, none missing."""
    sd = strip_unet_prefix(state_dict)
    cfg = config if config is not None else detect_unet_config(sd)
    with torch.device("meta"):
        model = UNetModel(cfg)
    if dtype is not None or device is not None:
        sd = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"UNet state dict does not match its config: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return model.eval()
