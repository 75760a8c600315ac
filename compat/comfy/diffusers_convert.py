"""`comfy.diffusers_convert`: diffusers-layout state dicts in the original (LDM / OpenCLIP) layout, by the engine's
key maps (model_management/diffusers_folder.py, diffusion/synthetic_checkpoints.py)."""
from __future__ import annotations

from typing import Dict

import torch

from diffusion.synthetic_checkpoints import to_open_clip_layout
from model_management.diffusers_folder import unet_to_ldm, vae_to_ldm


def convert_unet_state_dict(unet_state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A diffusers UNet (`down_blocks.*`, `mid_block.*`, `up_blocks.*`) under LDM names (`input_blocks.*`, ...)."""
    return unet_to_ldm(unet_state_dict)


def convert_vae_state_dict(vae_state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A diffusers VAE under LDM names, its mid-block attention projections as the 1x1 convs LDM stores."""
    return vae_to_ldm(vae_state_dict)


def convert_text_enc_state_dict(text_enc_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """CLIP-L keeps transformers' layout in single-file checkpoints: unchanged."""
    return text_enc_dict


def convert_text_enc_state_dict_v20(text_enc_dict: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
    """The keys under `prefix` of a transformers-layout CLIP text model (`text_model.*`, optionally below a
    `transformer.` level, and `text_projection.weight`) in OpenCLIP's layout (fused q/k/v in `attn.in_proj_*`,
    `transformer.resblocks.N`, the projection transposed), keeping `prefix`."""
    hf = {}
    for key, value in text_enc_dict.items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest.startswith("transformer."):
            rest = rest[len("transformer."):]
        hf[rest] = value
    if "text_model.embeddings.token_embedding.weight" not in hf:
        raise ValueError(f"no transformers-layout CLIP text weights under prefix {prefix!r}")
    out = to_open_clip_layout(hf)
    out.pop("logit_scale", None)
    return {prefix + k: v for k, v in out.items()}
