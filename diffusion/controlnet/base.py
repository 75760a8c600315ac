"""The protocol every control model (ControlNet, T2I-adapter, control-LoRA) implements for the control runtime.

The runtime (`diffusion.controlnet.control.ControlRuntime`) owns strength, the sigma window, hint resizing and
stacking; a control model only turns one batch into the UNet's control dict, so new formats plug in by implementing
`compute` and setting `family`.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, runtime_checkable

import torch

FAMILIES = ("sd1", "sd2", "sdxl")


@runtime_checkable
class ControlModel(Protocol):
    """A loaded control network.

    family: "sd1" | "sd2" | "sdxl" -- checked against the MODEL being sampled so a mismatch fails with a clear error.
    compute(x_in, timesteps, context, y, hint, model) -> the UNet control dict for this batch:
      x_in [B, 4, h, w] (already c_in-scaled), timesteps [B] (UNet timesteps), context [B, T, D], y [B, adm] or None,
      hint [B, 3, 8h, 8w] float in 0..1 (resized and batched by the runtime), model the DiffusionModel (MODEL).
      Returns {"input": [...], "middle": [...], "output": [...]} (any subset; see diffusion/unet/model.py); the
      runtime multiplies every residual by the strength and adds stacked controls' dicts.
    """

    family: str

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        ...


def control_family(context_dim: Optional[int], adm_in_channels: Optional[int],
                   linear_proj: Optional[bool] = None) -> str:
    """The SD family a control network belongs to: SDXL has a class (size) embedding; SD2 uses linear transformer
    projections (SD1 convolutional ones). Without `linear_proj`, a context of 1024+ dims means SD2."""
    if adm_in_channels:
        return "sdxl"
    if linear_proj is not None:
        return "sd2" if linear_proj else "sd1"
    if context_dim is not None and context_dim >= 1024:
        return "sd2"
    return "sd1"


def model_family(model: Any) -> str:
    """The family name of a MODEL (DiffusionModel) in the same terms as `ControlModel.family`."""
    return getattr(getattr(model, "family", None), "name", "unknown")
