"""`comfy.sampler_helpers`: mask preparation and conditioning helpers packs call around sampling."""
from __future__ import annotations

from typing import Any, List

import torch


def prepare_mask(noise_mask: torch.Tensor, shape: Any, device: Any) -> torch.Tensor:
    """A noise mask resized (bilinear) to a latent's spatial size, repeated over its channels and batch."""
    mask = noise_mask.reshape(-1, 1, noise_mask.shape[-2], noise_mask.shape[-1]).float()
    mask = torch.nn.functional.interpolate(mask, size=(shape[2], shape[3]), mode="bilinear")
    mask = torch.cat([mask] * shape[1], dim=1)
    from diffusion.image_ops import repeat_to_batch_size
    return repeat_to_batch_size(mask, shape[0]).to(device)


def convert_cond(cond: list) -> list:
    """CONDITIONING as ComfyUI's samplers see it: one dict per entry, the tensor under `cross_attn`."""
    out = []
    for tensor, options in cond:
        entry = dict(options)
        if tensor is not None:
            entry["cross_attn"] = tensor
        entry["model_conds"] = dict(entry.get("model_conds", {}))
        out.append(entry)
    return out


def get_additional_models(conds: dict, dtype: Any) -> tuple:
    """(models, inference memory) that the conditioning needs beside the MODEL: ControlNets stay with their
    conditioning in Tessera and load themselves, so there is nothing extra to load here."""
    return [], 0


def cleanup_additional_models(models: List[Any]) -> None:
    """Nothing to clean up: models are resident through the residency manager, not per sampling run."""
