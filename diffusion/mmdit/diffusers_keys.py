"""diffusers' SD3Transformer2DModel key names -> the original MMDiT layout (model.py), for transformer files
saved by diffusers (`transformer/diffusion_pytorch_model.safetensors`, or a single file in that layout).

Two differences beyond names: diffusers stores q, k and v as three linear layers where the original has one
`qkv` layer (concatenated on the output axis, in q, k, v order), and its continuous adaLN layers (the final layer
and the last block's text stream) emit (scale, shift) where the original emits (shift, scale).
"""
from __future__ import annotations

import re
from typing import Dict

import torch

FIXED = {
    "pos_embed.proj.": "x_embedder.proj.",
    "pos_embed.pos_embed": "pos_embed",
    "time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
    "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
    "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
    "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2.",
    "context_embedder.": "context_embedder.",
    "norm_out.linear.": "final_layer.adaLN_modulation.1.",
    "proj_out.": "final_layer.linear.",
}

BLOCK = {  # per transformer block: diffusers name -> original name under joint_blocks.N.
    "norm1.linear.": "x_block.adaLN_modulation.1.",
    "norm1_context.linear.": "context_block.adaLN_modulation.1.",
    "attn.to_out.0.": "x_block.attn.proj.",
    "attn.to_add_out.": "context_block.attn.proj.",
    "attn.norm_q.": "x_block.attn.ln_q.",
    "attn.norm_k.": "x_block.attn.ln_k.",
    "attn.norm_added_q.": "context_block.attn.ln_q.",
    "attn.norm_added_k.": "context_block.attn.ln_k.",
    "attn2.to_out.0.": "x_block.attn2.proj.",
    "attn2.norm_q.": "x_block.attn2.ln_q.",
    "attn2.norm_k.": "x_block.attn2.ln_k.",
    "ff.net.0.proj.": "x_block.mlp.fc1.",
    "ff.net.2.": "x_block.mlp.fc2.",
    "ff_context.net.0.proj.": "context_block.mlp.fc1.",
    "ff_context.net.2.": "context_block.mlp.fc2.",
}

QKV = {  # fused projections: (q, k, v) diffusers prefixes -> original prefix
    ("attn.to_q.", "attn.to_k.", "attn.to_v."): "x_block.attn.qkv.",
    ("attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj."): "context_block.attn.qkv.",
    ("attn2.to_q.", "attn2.to_k.", "attn2.to_v."): "x_block.attn2.qkv.",
}

BLOCK_KEY = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def is_diffusers_sd3(state: Dict[str, torch.Tensor]) -> bool:
    return "pos_embed.proj.weight" in state and "transformer_blocks.0.attn.to_q.weight" in state \
        and "transformer_blocks.0.attn.add_q_proj.weight" in state


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    """(scale, shift) -> (shift, scale) along the output axis."""
    scale, shift = t.chunk(2, dim=0)
    return torch.cat([shift, scale], dim=0)


def to_original(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A diffusers SD3 transformer state dict renamed (and fused) into the original layout; entries are moved out
    of `state` as they are converted, so the file's tensors are not held twice."""
    out: Dict[str, torch.Tensor] = {}
    depth = 1 + max(int(m.group(1)) for m in map(BLOCK_KEY.match, state) if m)
    for key in list(state):
        for old, new in FIXED.items():
            if key.startswith(old):
                value = state.pop(key)
                out[new + key[len(old):]] = swap_halves(value) if old == "norm_out.linear." else value
                break
    for i in range(depth):
        block = f"transformer_blocks.{i}."
        for parts, new in QKV.items():
            for suffix in ("weight", "bias"):
                names = [block + part + suffix for part in parts]
                if all(n in state for n in names):
                    out[f"joint_blocks.{i}.{new}{suffix}"] = torch.cat([state.pop(n) for n in names], dim=0)
        for old, new in BLOCK.items():
            for suffix in ("weight", "bias"):
                name = block + old + suffix
                if name in state:
                    value = state.pop(name)
                    if old == "norm1_context.linear." and i == depth - 1:
                        value = swap_halves(value)  # the last block's text stream: continuous adaLN
                    out[f"joint_blocks.{i}.{new}{suffix}"] = value
    if state:
        raise ValueError(f"diffusers SD3 transformer keys with no original counterpart: {sorted(state)[:4]}")
    return out


def diffusers_module_names(depth: int) -> Dict[str, tuple]:
    """diffusers module name -> (original module, part, shares) for the linear and conv layers of a depth-`depth`
    SD3 transformer, where part is None for a whole layer or 0/1/2 for the q/k/v third of a fused qkv layer (shares
    1, 1, 1: what a LoRA trained with diffusers names). The layers whose (scale, shift) halves diffusers swaps are left out: a
    low-rank change to them is not a change of the same shape in the original."""
    out: Dict[str, tuple] = {}
    for old, new in FIXED.items():
        if old.endswith(".") and old != "norm_out.linear.":
            out[old[:-1]] = (new[:-1], None, None)
    for i in range(depth):
        block, target = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        for old, new in BLOCK.items():
            if ".norm_" in "." + old or (old == "norm1_context.linear." and i == depth - 1):
                continue
            out[block + old[:-1]] = (target + new[:-1], None, None)
        for parts, new in QKV.items():
            for index, part in enumerate(parts):
                out[block + part[:-1]] = (target + new[:-1], index, (1, 1, 1))
    return out
