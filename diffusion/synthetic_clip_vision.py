"""Random-weight CLIP vision towers in transformers' layout (`vision_model.*`, `visual_projection.weight`), the
layout of the clip_vision folder's files (clip_vision_g.safetensors, clip_vision_h, ViT-L). `projection` sets the
image-embedding width: 1280 for bigG (SDXL revision), 1024 for ViT-H, 768 for ViT-L; tiny towers take the width
of the tiny model they condition."""
from __future__ import annotations

from typing import Dict, Optional

import torch


def make_clip_vision(projection: int, seed: int = 0, hidden: int = 64, layers: int = 2,
                     image_size: int = 32, patch: int = 8) -> Dict[str, torch.Tensor]:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                              num_attention_heads=max(1, hidden // 64), image_size=image_size, patch_size=patch,
                              projection_dim=projection, hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def make_siglip_vision(seed: int = 0, hidden: int = 64, layers: int = 2, image_size: int = 28,
                       patch: int = 14) -> Dict[str, torch.Tensor]:
    """A random SigLIP vision tower in transformers' SiglipVisionModel layout, the layout of
    sigclip_vision_patch14_384.safetensors (full size: hidden 1152, 27 layers, 384 / 14)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(seed)
    config = SiglipVisionConfig(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                                num_attention_heads=max(1, hidden // 64), image_size=image_size, patch_size=patch)
    model = SiglipVisionModel(config)
    return {("" if k.startswith("vision_model.") else "vision_model.") + k: v.detach().contiguous()
            for k, v in model.state_dict().items() if not k.endswith("position_ids") and ".head." not in "." + k}


def make_redux(image_width: int = 64, text_width: Optional[int] = None, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A random Flux Redux style model (redux_up: image width -> 3 x text width, redux_down: -> text width); the
    text width defaults to the tiny T5's, what the tiny Flux takes."""
    from diffusion.vision.redux import ReduxImageEncoder
    if text_width is None:
        from diffusion.synthetic_sd3 import T5_SIZES
        text_width = T5_SIZES["tiny"][0]
    torch.manual_seed(seed)
    model = ReduxImageEncoder(image_width, 3 * text_width, text_width)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}
