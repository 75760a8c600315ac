"""The shape of a Flux.1 transformer, read from its weights (original BFL key layout, `model.diffusion_model.`
removed).

Width from the image input layer, depths from the block indices, the head size from the per-head query norm (so
the head count is width / head size), the MLP width from the first double block, and the variant from its keys:
`guidance_in` (guidance-distilled: dev) or not (schnell). The rotary position embedding splits each head into
three axes (image index, row, column); the released models use 16 / 56 / 56 of their 128 channels, and smaller
heads keep those proportions (1/8, 7/16, 7/16).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch


@dataclass
class FluxConfig:
    in_channels: int = 64  # 16 latent channels x 2 x 2 patch (Fill: 96 x 4, Canny/Depth: 32 x 4)
    out_channels: int = 16  # the velocity's latent channels
    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19  # double-stream blocks
    depth_single: int = 38
    mlp_hidden: int = 12288
    context_in: int = 4096  # T5-XXL's width
    vec_in: int = 768  # CLIP-L's pooled output
    guidance_embed: bool = True
    axes_dim: Tuple[int, int, int] = (16, 56, 56)
    theta: int = 10000
    patch_size: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def latent_channels(self) -> int:
        return self.in_channels // (self.patch_size * self.patch_size)

    @property
    def context_dim(self) -> int:
        """The text-token width, under the UNet config's name (what conditioning is checked against)."""
        return self.context_in

    @property
    def pooled_in(self) -> int:
        return self.vec_in

    adm_in_channels = 0


def is_flux(state: Dict[str, torch.Tensor]) -> bool:
    return "double_blocks.0.img_attn.qkv.weight" in state and "img_in.weight" in state


def rope_axes(head_dim: int) -> Tuple[int, int, int]:
    if head_dim == 128:
        return (16, 56, 56)
    first = head_dim // 8
    rest = (head_dim - first) // 2
    return (first, rest, head_dim - first - rest)


def detect_flux_config(state: Dict[str, torch.Tensor]) -> FluxConfig:
    """The config whose module layout matches `state`; ValueError when it is no Flux transformer."""
    if not is_flux(state):
        raise ValueError("not a Flux transformer: no double_blocks / img_in weights")
    img_in = state["img_in.weight"]
    hidden = int(img_in.shape[0])
    head_dim = int(state["double_blocks.0.img_attn.norm.query_norm.scale"].shape[0])
    if hidden % head_dim:
        raise ValueError(f"Flux width {hidden} is not a multiple of its head size {head_dim}")
    count = lambda prefix: 1 + max((int(k.split(".")[1]) for k in state if k.startswith(prefix)), default=-1)  # noqa
    return FluxConfig(
        in_channels=int(img_in.shape[1]), out_channels=int(state["final_layer.linear.weight"].shape[0]) // 4,
        hidden_size=hidden, num_heads=hidden // head_dim,
        depth=count("double_blocks."), depth_single=count("single_blocks."),
        mlp_hidden=int(state["double_blocks.0.img_mlp.0.weight"].shape[0]),
        context_in=int(state["txt_in.weight"].shape[1]), vec_in=int(state["vector_in.in_layer.weight"].shape[1]),
        guidance_embed="guidance_in.in_layer.weight" in state, axes_dim=rope_axes(head_dim))
