"""diffusers' FluxTransformer2DModel key names -> the original (BFL) layout (model.py), for Flux files saved by
diffusers (`transformer/diffusion_pytorch_model*.safetensors`, or one file in that layout).

Beyond names: diffusers keeps q, k and v (and, in single blocks, the MLP's input) as separate linear layers where
the original fuses them into one (concatenated on the output axis: q, k, v, then the MLP), and its final adaLN
emits (scale, shift) where the original emits (shift, scale).
"""
from __future__ import annotations

import re
from typing import Dict

import torch

FIXED = {
    "x_embedder.": "img_in.", "context_embedder.": "txt_in.",
    "time_text_embed.timestep_embedder.linear_1.": "time_in.in_layer.",
    "time_text_embed.timestep_embedder.linear_2.": "time_in.out_layer.",
    "time_text_embed.guidance_embedder.linear_1.": "guidance_in.in_layer.",
    "time_text_embed.guidance_embedder.linear_2.": "guidance_in.out_layer.",
    "time_text_embed.text_embedder.linear_1.": "vector_in.in_layer.",
    "time_text_embed.text_embedder.linear_2.": "vector_in.out_layer.",
    "norm_out.linear.": "final_layer.adaLN_modulation.1.",
    "proj_out.": "final_layer.linear.",
}
DOUBLE = {  # under transformer_blocks.N. -> double_blocks.N.
    "norm1.linear.": "img_mod.lin.", "norm1_context.linear.": "txt_mod.lin.",
    "attn.to_out.0.": "img_attn.proj.", "attn.to_add_out.": "txt_attn.proj.",
    "ff.net.0.proj.": "img_mlp.0.", "ff.net.2.": "img_mlp.2.",
    "ff_context.net.0.proj.": "txt_mlp.0.", "ff_context.net.2.": "txt_mlp.2.",
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale", "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
}
DOUBLE_FUSED = {("attn.to_q.", "attn.to_k.", "attn.to_v."): "img_attn.qkv.",
                ("attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj."): "txt_attn.qkv."}
SINGLE = {  # under single_transformer_blocks.N. -> single_blocks.N.
    "norm.linear.": "modulation.lin.", "proj_out.": "linear2.",
    "attn.norm_q.weight": "norm.query_norm.scale", "attn.norm_k.weight": "norm.key_norm.scale",
}
SINGLE_FUSED = {("attn.to_q.", "attn.to_k.", "attn.to_v.", "proj_mlp."): "linear1."}
BLOCK_KEY = re.compile(r"^(single_transformer_blocks|transformer_blocks)\.(\d+)\.")


def is_diffusers_flux(state: Dict[str, torch.Tensor]) -> bool:
    return "x_embedder.weight" in state and any(k.startswith("single_transformer_blocks.") for k in state)


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    scale, shift = t.chunk(2, dim=0)
    return torch.cat([shift, scale], dim=0)


def _move(state: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor], src: str, dst: str, table: dict,
          fused: dict) -> None:
    for parts, new in fused.items():
        for suffix in ("weight", "bias"):
            names = [src + part + suffix for part in parts]
            if all(n in state for n in names):
                out[dst + new + suffix] = torch.cat([state.pop(n) for n in names], dim=0)
    for old, new in table.items():
        if old.endswith("."):
            for suffix in ("weight", "bias"):
                if src + old + suffix in state:
                    out[dst + new + suffix] = state.pop(src + old + suffix)
        elif src + old in state:
            out[dst + new] = state.pop(src + old)


def to_original(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A diffusers Flux transformer state dict renamed (and fused) into the original layout; entries are moved out
    of `state` as they are converted, so the file's tensors are not held twice."""
    out: Dict[str, torch.Tensor] = {}
    blocks = {(m.group(1), int(m.group(2))) for m in map(BLOCK_KEY.match, state) if m}
    for kind, index in sorted(blocks):
        if kind == "transformer_blocks":
            _move(state, out, f"transformer_blocks.{index}.", f"double_blocks.{index}.", DOUBLE, DOUBLE_FUSED)
        else:
            _move(state, out, f"single_transformer_blocks.{index}.", f"single_blocks.{index}.", SINGLE, SINGLE_FUSED)
    for key in list(state):
        for old, new in FIXED.items():
            if key.startswith(old):
                value = state.pop(key)
                out[new + key[len(old):]] = _swap_halves(value) if old == "norm_out.linear." else value
                break
    if state:
        raise ValueError(f"diffusers Flux transformer keys with no original counterpart: {sorted(state)[:4]}")
    return out


def diffusers_module_names(depth: int, depth_single: int, mlp_ratio: int = 4) -> Dict[str, tuple]:
    """diffusers module name -> (original module, part, shares) for a Flux transformer's linear layers, where
    part is None for a whole layer, else the block of a fused layer it is (shares: the blocks' row proportions:
    q, k, v of a qkv; q, k, v, MLP input of a single block's linear1). The final adaLN (halves swapped) is left
    out: a low-rank change to it is not one of the same shape in the original."""
    out: Dict[str, tuple] = {}
    for old, new in FIXED.items():
        if old != "norm_out.linear.":
            out[old[:-1]] = (new[:-1], None, None)
    for i in range(depth):
        for old, new in DOUBLE.items():
            if old.endswith("."):
                out[f"transformer_blocks.{i}.{old[:-1]}"] = (f"double_blocks.{i}.{new[:-1]}", None, None)
        for parts, new in DOUBLE_FUSED.items():
            for index, part in enumerate(parts):
                out[f"transformer_blocks.{i}.{part[:-1]}"] = (f"double_blocks.{i}.{new[:-1]}", index, (1, 1, 1))
    for i in range(depth_single):
        for old, new in SINGLE.items():
            if old.endswith("."):
                out[f"single_transformer_blocks.{i}.{old[:-1]}"] = (f"single_blocks.{i}.{new[:-1]}", None, None)
        for parts, new in SINGLE_FUSED.items():
            for index, part in enumerate(parts):
                out[f"single_transformer_blocks.{i}.{part[:-1]}"] = (f"single_blocks.{i}.{new[:-1]}", index,
                                                                    (1, 1, 1, mlp_ratio))
    return out
