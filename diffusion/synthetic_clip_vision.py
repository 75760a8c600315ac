"""Random-weight CLIP vision towers in transformers' layout (`vision_model.*`, `visual_projection.weight`), the
layout of the clip_vision folder's files (clip_vision_g.safetensors, clip_vision_h, ViT-L). `projection` sets the
image-embedding width: 1280 for bigG (SDXL revision), 1024 for ViT-H, 768 for ViT-L; tiny towers take the width
of the tiny model they condition."""
from __future__ import annotations

from typing import Dict

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
