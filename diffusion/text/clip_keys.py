"""Text-encoder weights in the two layouts checkpoints use, converted to transformers' CLIP layout, and the model
config read off the tensor shapes.

- HF layout (OpenAI CLIP-L in SD1/SDXL checkpoints, standalone `text_model.*` files): already transformers' names.
  Old SD1 checkpoints omit the `text_model.` level; stored `position_ids` buffers are ignored (positions are 0..n-1).
- OpenCLIP layout (SD2 ViT-H, SDXL bigG): `transformer.resblocks.N.*` with q/k/v stacked in `attn.in_proj_*`,
  `positional_embedding`, `ln_final`, and `text_projection` as a [width, proj] matrix applied as `x @ P` -- so the
  transformers Linear weight is its transpose.

Every source key is accounted for: converted, `ignored` (known and unused: position_ids, logit_scale, attn_mask), or
`unused` (not understood; reported to the caller).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

# Single-file checkpoint prefixes of each family's text encoders.
SD1_TEXT = "cond_stage_model.transformer."
SD2_TEXT = "cond_stage_model.model."
SDXL_TEXT_L = "conditioner.embedders.0.transformer."
SDXL_TEXT_G = "conditioner.embedders.1.model."
REFINER_TEXT_G = "conditioner.embedders.0.model."

HF_ROOT = "text_model."
_HF_TOP = ("embeddings.", "encoder.", "final_layer_norm.")
_HF_IGNORED = ("text_model.embeddings.position_ids", "embeddings.position_ids", "logit_scale")
_OPENCLIP_IGNORED = ("logit_scale", "attn_mask")
_OPENCLIP_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")
_OPENCLIP_BLOCK_PARTS = {
    "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_OPENCLIP_TOP = {
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


@dataclass
class ConvertedWeights:
    """Weights in transformers' CLIPTextModelWithProjection naming (`text_model.*`, `text_projection.weight`)."""
    state_dict: Dict[str, torch.Tensor]
    layout: str  # "hf" | "openclip"
    ignored: List[str] = field(default_factory=list)
    unused: List[str] = field(default_factory=list)

    @property
    def has_projection(self) -> bool:
        return "text_projection.weight" in self.state_dict


def detect_layout(state: Dict[str, torch.Tensor]) -> Optional[str]:
    """"openclip", "hf" or None, from the key names of one text encoder (prefix already removed)."""
    if "positional_embedding" in state or any(k.startswith("transformer.resblocks.") for k in state):
        return "openclip"
    if any(k.startswith(HF_ROOT) or k.startswith(_HF_TOP) for k in state):
        return "hf"
    return None


def convert_hf(state: Dict[str, torch.Tensor]) -> ConvertedWeights:
    """HF-layout weights (with or without the `text_model.` level) -> canonical names."""
    out: Dict[str, torch.Tensor] = {}
    ignored, unused = [], []
    for key, value in state.items():
        if key in _HF_IGNORED:
            ignored.append(key)
        elif key.startswith(HF_ROOT) or key == "text_projection.weight":
            out[key] = value
        elif key.startswith(_HF_TOP):
            out[HF_ROOT + key] = value
        else:
            unused.append(key)
    return ConvertedWeights(out, "hf", ignored, unused)


def convert_openclip(state: Dict[str, torch.Tensor]) -> ConvertedWeights:
    """OpenCLIP text-tower weights -> canonical names (q/k/v split, projection transposed)."""
    out: Dict[str, torch.Tensor] = {}
    ignored, unused = [], []
    for key, value in state.items():
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = value
            continue
        if key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
            continue
        if key in _OPENCLIP_IGNORED:
            ignored.append(key)
            continue
        m = _OPENCLIP_BLOCK.match(key)
        if m is None:
            unused.append(key)
            continue
        base = f"text_model.encoder.layers.{m.group(1)}."
        part = m.group(2)
        if part in _OPENCLIP_BLOCK_PARTS:
            out[base + _OPENCLIP_BLOCK_PARTS[part]] = value
        elif part in ("attn.in_proj_weight", "attn.in_proj_bias"):
            if value.shape[0] % 3:
                raise ValueError(f"{key}: first dimension {value.shape[0]} is not q, k and v stacked")
            kind = "weight" if part.endswith("weight") else "bias"
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = chunk.contiguous()
        else:
            unused.append(key)
    return ConvertedWeights(out, "openclip", ignored, unused)


def convert_text_encoder(state: Dict[str, torch.Tensor]) -> ConvertedWeights:
    """Either layout, detected from the keys."""
    layout = detect_layout(state)
    if layout == "openclip":
        return convert_openclip(state)
    if layout == "hf":
        return convert_hf(state)
    sample = ", ".join(sorted(state)[:5])
    raise ValueError(f"not a CLIP text encoder (neither transformers nor OpenCLIP key names; keys: {sample} ...)")


def heads_for_width(width: int, num_heads: Optional[int] = None) -> int:
    """Attention heads are not visible in the weights. CLIP text towers use 64-wide heads, so heads = width // 64
    when the width is a positive multiple of 64; any other width (tiny test models) needs `num_heads` given."""
    if num_heads is not None:
        if num_heads <= 0 or width % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide the text encoder width {width}")
        return num_heads
    if width >= 64 and width % 64 == 0:
        return width // 64
    raise ValueError(f"text encoder width {width} is not a multiple of 64: pass num_heads explicitly")


def derive_text_config(weights: ConvertedWeights, hidden_act: str, num_heads: Optional[int] = None):
    """A CLIPTextConfig whose every size comes from the tensor shapes (nothing downloaded, no size tables)."""
    from transformers import CLIPTextConfig

    sd = weights.state_dict
    try:
        token = sd["text_model.embeddings.token_embedding.weight"]
        position = sd["text_model.embeddings.position_embedding.weight"]
    except KeyError as exc:
        raise ValueError(f"text encoder weights lack {exc.args[0]}") from None
    layers = sorted({int(m.group(1)) for k in sd for m in [_LAYER.match(k)] if m})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"text encoder layers are not numbered 0..n-1 (found {layers[:8]}...)")
    fc1 = sd.get("text_model.encoder.layers.0.mlp.fc1.weight")
    if fc1 is None:
        raise ValueError("text encoder weights lack text_model.encoder.layers.0.mlp.fc1.weight")
    vocab, width = token.shape
    projection = sd.get("text_projection.weight")
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=fc1.shape[0],
        projection_dim=projection.shape[0] if projection is not None else width,
        num_hidden_layers=len(layers),
        num_attention_heads=heads_for_width(width, num_heads),
        max_position_embeddings=position.shape[0],
        hidden_act=hidden_act,
        layer_norm_eps=1e-5,
        attention_dropout=0.0,
    )
    config._attn_implementation = "sdpa"
    return config
