"""The shape of an SD3 / SD3.5 MMDiT, read from its weights (original key layout, `model.diffusion_model.` removed).

Nothing is looked up by model name: width and patch size come from the patch embedding, depth from the joint
blocks, the head count from the width (64 channels a head in every released SD3 model), the position grid from
`pos_embed`, and the SD3.5 features from the keys that carry them: RMS-normalised queries and keys (`attn.ln_q`,
SD3.5 large and medium) and the second self-attention of MMDiT-X (`x_block.attn2`, SD3.5 medium's first 13
blocks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch

HEAD_DIM = 64


@dataclass
class MMDiTConfig:
    in_channels: int = 16
    out_channels: int = 16
    patch_size: int = 2
    hidden_size: int = 1536
    depth: int = 24
    num_heads: int = 24
    mlp_hidden: int = 6144
    context_in: int = 4096  # width of the text encoders' concatenated tokens
    pooled_in: int = 2048  # width of the pooled CLIP-L + CLIP-G vector (y)
    pos_embed_max_size: int = 192  # the stored position grid is max x max patches
    qk_norm: bool = False
    self_attention_layers: Tuple[int, ...] = field(default_factory=tuple)  # blocks with the MMDiT-X attn2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def context_dim(self) -> int:
        """The text-token width, under the UNet config's name (what conditioning is checked against)."""
        return self.context_in

    adm_in_channels = 0  # no SDXL-style size embedding: y is the pooled text itself (pooled_in wide)


def is_mmdit(state: Dict[str, torch.Tensor]) -> bool:
    return "joint_blocks.0.x_block.attn.qkv.weight" in state and "x_embedder.proj.weight" in state


def detect_mmdit_config(state: Dict[str, torch.Tensor]) -> MMDiTConfig:
    """The config whose module layout matches `state` exactly; ValueError when it is no MMDiT."""
    if not is_mmdit(state):
        raise ValueError("not an MMDiT (SD3) diffusion model: no joint_blocks / x_embedder weights")
    proj = state["x_embedder.proj.weight"]
    hidden, in_channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("joint_blocks."))
    if hidden % HEAD_DIM:
        raise ValueError(f"MMDiT width {hidden} is not a multiple of {HEAD_DIM} (the head size of SD3 models)")
    pos = state.get("pos_embed")
    if pos is None:
        raise ValueError("MMDiT without a stored position embedding (pos_embed)")
    grid = math.isqrt(pos.shape[1])
    if grid * grid != pos.shape[1]:
        raise ValueError(f"pos_embed holds {pos.shape[1]} positions, not a square grid")
    final = state["final_layer.linear.weight"]
    return MMDiTConfig(
        in_channels=in_channels, out_channels=final.shape[0] // (patch * patch), patch_size=patch,
        hidden_size=hidden, depth=depth, num_heads=hidden // HEAD_DIM,
        mlp_hidden=state["joint_blocks.0.x_block.mlp.fc1.weight"].shape[0],
        context_in=state["context_embedder.weight"].shape[1],
        pooled_in=state["y_embedder.mlp.0.weight"].shape[1] if "y_embedder.mlp.0.weight" in state else 0,
        pos_embed_max_size=grid,
        qk_norm="joint_blocks.0.x_block.attn.ln_q.weight" in state,
        self_attention_layers=tuple(i for i in range(depth) if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in state),
    )
