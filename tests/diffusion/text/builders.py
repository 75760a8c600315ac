"""Tiny random CLIP text towers for the tests, in the three source layouts, and independent references.

The references never go through diffusion.text's conversion: HF-layout weights run in transformers' own models;
OpenCLIP-layout weights are produced with the real key names and shapes, then (a) run by a plain-torch OpenCLIP-style
forward built on nn.MultiheadAttention (what OpenCLIP itself uses) and (b) mapped into a transformers model by a few
lines written here.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

VOCAB = 49408
POSITIONS = 77


def tiny_config(width: int, layers: int, heads: int, act: str = "quick_gelu",
                projection: Optional[int] = None) -> CLIPTextConfig:
    config = CLIPTextConfig(vocab_size=VOCAB, hidden_size=width, intermediate_size=4 * width,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=POSITIONS,
                            hidden_act=act, projection_dim=projection or width, layer_norm_eps=1e-5,
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    config._attn_implementation = "eager"
    return config


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Weights large enough that every layer visibly changes the hidden state."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif "token_embedding" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def hf_model(width: int, layers: int, heads: int, *, act: str = "quick_gelu", projection: Optional[int] = None,
             seed: int = 0) -> nn.Module:
    """A random transformers CLIP text model (with projection when `projection` is given)."""
    config = tiny_config(width, layers, heads, act, projection)
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return randomize_(model, seed)


def hf_layout_state(model: nn.Module, with_root: bool = True) -> Dict[str, torch.Tensor]:
    """Checkpoint-style HF keys: `text_model.*` (+ `text_projection.weight`); old SD1 files lack `text_model.`."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if isinstance(model, CLIPTextModel):
        state = {("text_model." + k if with_root else k): v for k, v in state.items()}
    elif not with_root:
        state = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state.items()}
    return state


def openclip_state(width: int, layers: int, projection: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """An OpenCLIP text tower's state dict with the real names and shapes (SD2 ViT-H / SDXL bigG style)."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape, s=0.1: s * torch.randn(shape, generator=gen)  # noqa: E731
    ones = lambda n: 1 + rnd(n)  # noqa: E731
    sd = {
        "token_embedding.weight": rnd(VOCAB, width, s=0.5),
        "positional_embedding": rnd(POSITIONS, width),
        "ln_final.weight": ones(width), "ln_final.bias": rnd(width),
        "text_projection": rnd(width, projection),
        "logit_scale": torch.tensor(4.6052),
    }
    for n in range(layers):
        p = f"transformer.resblocks.{n}."
        sd.update({
            p + "ln_1.weight": ones(width), p + "ln_1.bias": rnd(width),
            p + "attn.in_proj_weight": rnd(3 * width, width), p + "attn.in_proj_bias": rnd(3 * width),
            p + "attn.out_proj.weight": rnd(width, width), p + "attn.out_proj.bias": rnd(width),
            p + "ln_2.weight": ones(width), p + "ln_2.bias": rnd(width),
            p + "mlp.c_fc.weight": rnd(4 * width, width), p + "mlp.c_fc.bias": rnd(4 * width),
            p + "mlp.c_proj.weight": rnd(width, 4 * width), p + "mlp.c_proj.bias": rnd(width),
        })
    return sd


def openclip_reference(sd: Dict[str, torch.Tensor], ids: torch.Tensor, heads: int,
                       inject: Optional[Dict[tuple, torch.Tensor]] = None):
    """OpenCLIP's text forward in plain torch. Returns (hidden states after each block, ln_final fn, pooled)."""
    width = sd["token_embedding.weight"].shape[1]
    x = sd["token_embedding.weight"][ids].clone()
    for (b, pos), vec in (inject or {}).items():
        x[b, pos] = vec
    x = x + sd["positional_embedding"][: ids.shape[1]]
    length = ids.shape[1]
    mask = torch.full((length, length), float("-inf")).triu(1)
    states: List[torch.Tensor] = []
    n = 0
    while f"transformer.resblocks.{n}.ln_1.weight" in sd:
        p = f"transformer.resblocks.{n}."
        attn = nn.MultiheadAttention(width, heads, batch_first=True)
        attn.load_state_dict({"in_proj_weight": sd[p + "attn.in_proj_weight"],
                              "in_proj_bias": sd[p + "attn.in_proj_bias"],
                              "out_proj.weight": sd[p + "attn.out_proj.weight"],
                              "out_proj.bias": sd[p + "attn.out_proj.bias"]})
        attn.eval()
        h = F.layer_norm(x, (width,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"])
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = F.layer_norm(x, (width,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"])
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])),
                     sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
        x = x + h
        states.append(x)
        n += 1
    ln_final = lambda t: F.layer_norm(t, (width,), sd["ln_final.weight"], sd["ln_final.bias"])  # noqa: E731
    final = ln_final(x)
    pooled = final[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ sd["text_projection"]
    return states, ln_final, pooled


def openclip_to_hf_model(sd: Dict[str, torch.Tensor], heads: int) -> CLIPTextModelWithProjection:
    """The same OpenCLIP weights in a transformers model, mapped here independently of diffusion.text."""
    width = sd["token_embedding.weight"].shape[1]
    layers = sum(1 for k in sd if k.endswith("ln_1.weight"))
    model = CLIPTextModelWithProjection(tiny_config(width, layers, heads, "gelu", sd["text_projection"].shape[1]))
    hf = {"text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
          "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
          "text_model.final_layer_norm.weight": sd["ln_final.weight"],
          "text_model.final_layer_norm.bias": sd["ln_final.bias"],
          "text_projection.weight": sd["text_projection"].T}
    for n in range(layers):
        s, d = f"transformer.resblocks.{n}.", f"text_model.encoder.layers.{n}."
        q, k, v = sd[s + "attn.in_proj_weight"].split(width)
        qb, kb, vb = sd[s + "attn.in_proj_bias"].split(width)
        hf.update({d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k,
                   d + "self_attn.v_proj.weight": v, d + "self_attn.q_proj.bias": qb,
                   d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb,
                   d + "self_attn.out_proj.weight": sd[s + "attn.out_proj.weight"],
                   d + "self_attn.out_proj.bias": sd[s + "attn.out_proj.bias"],
                   d + "layer_norm1.weight": sd[s + "ln_1.weight"], d + "layer_norm1.bias": sd[s + "ln_1.bias"],
                   d + "layer_norm2.weight": sd[s + "ln_2.weight"], d + "layer_norm2.bias": sd[s + "ln_2.bias"],
                   d + "mlp.fc1.weight": sd[s + "mlp.c_fc.weight"], d + "mlp.fc1.bias": sd[s + "mlp.c_fc.bias"],
                   d + "mlp.fc2.weight": sd[s + "mlp.c_proj.weight"], d + "mlp.fc2.bias": sd[s + "mlp.c_proj.bias"]})
    model.load_state_dict(hf, strict=True)
    return model.eval()


def prefixed(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


@torch.no_grad()
def hf_hidden(model: nn.Module, ids: List[List[int]]):
    """transformers' own forward: (hidden_states tuple, last_hidden_state, pooled or projected text_embeds)."""
    out = model(input_ids=torch.tensor(ids), output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return out.hidden_states, out.last_hidden_state, pooled


def final_norm(model: nn.Module):
    return model.text_model.final_layer_norm if hasattr(model, "text_model") else model.final_layer_norm
