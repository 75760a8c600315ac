"""Random-weight SD3 / SD3.5 files in the exact on-disk layouts of the released ones.

A single-file SD3 checkpoint holds the MMDiT under `model.diffusion_model.` (original layout: `joint_blocks.*`),
the 16-channel VAE (no quant convs) under `first_stage_model.`, and optionally its text encoders under
`text_encoders.clip_l.transformer.`, `text_encoders.clip_g.transformer.` and `text_encoders.t5xxl.transformer.`
(all three in transformers' layout; CLIP-L keeps its text projection). The standalone encoder files
(clip_l.safetensors, clip_g.safetensors, t5xxl_fp16.safetensors) hold the same tensors without the prefix.

Tiny sizes keep every structural feature (qk RMS norm, an MMDiT-X block with its second attention, T5's gated
feed-forward and relative-position bias) while building in about a second; `full=True` gives SD3.5-medium's
transformer and VAE and the real CLIP-L / bigG (T5-XXL at full size is 4.7 B parameters: leave it out with
`text=("clip_l", "clip_g")` where memory is short).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional, Sequence

import torch

from diffusion.mmdit.config import MMDiTConfig

T5_VOCAB = 32128
# (hidden, layers, intermediate, projection) of the CLIP encoders SD3 files carry, full and tiny
SD3_CLIP_SIZES = {"clip_l": {"full": (768, 12, 3072, 768), "tiny": (64, 2, 128, 64)},
                  "clip_g": {"full": (1280, 32, 5120, 1280), "tiny": (128, 2, 256, 128)}}
# (d_model, layers, heads, d_ff) of T5
T5_SIZES = {"full": (4096, 24, 64, 10240), "tiny": (256, 2, 4, 512)}
ALL_TEXT = ("clip_l", "clip_g", "t5xxl")
TEXT_PREFIX = "text_encoders.{}.transformer."


def mmdit_config(full: bool) -> MMDiTConfig:
    """SD3.5 medium (MMDiT-X: second self-attention in blocks 0-12, qk norm), or a tiny one with the same features
    whose widths fit the tiny text encoders (context = T5's width, pooled = CLIP-L's + bigG's projection)."""
    if full:
        return MMDiTConfig(hidden_size=1536, depth=24, num_heads=24, mlp_hidden=6144, context_in=4096, pooled_in=2048,
                           pos_embed_max_size=384, qk_norm=True, self_attention_layers=tuple(range(13)))
    l_width, g_proj = SD3_CLIP_SIZES["clip_l"]["tiny"][0], SD3_CLIP_SIZES["clip_g"]["tiny"][3]
    return MMDiTConfig(hidden_size=128, depth=2, num_heads=2, mlp_hidden=256, context_in=T5_SIZES["tiny"][0],
                       pooled_in=l_width + g_proj, pos_embed_max_size=32, qk_norm=True, self_attention_layers=(0,))


def vae16_config(full: bool):
    from diffusion.vae.config import sd_vae_config, tiny_vae_config
    base = sd_vae_config() if full else tiny_vae_config()
    return replace(base, z_channels=16, embed_dim=16, quant_conv=False)


def mmdit_state(config: MMDiTConfig, seed: int, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """A randomly initialised MMDiT in the original layout (the position grid random too), in `dtype`."""
    from diffusion.mmdit.model import MMDiT
    torch.manual_seed(seed)
    model = MMDiT(config)
    with torch.no_grad():
        model.pos_embed.normal_(0.0, 0.5)
    model.to(dtype)  # tensor by tensor: a full-size model is never held twice
    return {k: v.detach() for k, v in model.state_dict().items()}


def sd3_clip_state(role: str, full: bool, seed: int) -> Dict[str, torch.Tensor]:
    """CLIP-L or bigG in transformers' layout, with its text projection (SD3's files keep both)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    hidden, layers, inter, proj = SD3_CLIP_SIZES[role]["full" if full else "tiny"]
    config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                            num_attention_heads=max(1, hidden // 64), max_position_embeddings=77,
                            projection_dim=proj, hidden_act="quick_gelu" if role == "clip_l" else "gelu")
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config)
    return {k: v.detach() for k, v in model.state_dict().items()}


def t5_state(full: bool, seed: int, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """T5 v1.1's encoder (gated GELU) in transformers' layout: `shared.weight`, `encoder.*`."""
    from transformers import T5Config, T5EncoderModel
    d_model, layers, heads, d_ff = T5_SIZES["full" if full else "tiny"]
    config = T5Config(vocab_size=T5_VOCAB, d_model=d_model, d_kv=64, d_ff=d_ff, num_layers=layers, num_heads=heads,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    state = {}
    for name, p in model.state_dict().items():
        if name == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight; released files store it once
        fan_in = p.shape[-1] if p.ndim > 1 else 1
        value = torch.randn(p.shape, dtype=torch.float32) * (fan_in ** -0.5 if p.ndim > 1 else 0.1)
        if name.endswith("layer_norm.weight"):
            value = 1.0 + value
        state[name] = value.to(dtype)
    return state


def make_sd3_checkpoint(full: bool = False, seed: int = 0, text: Sequence[str] = ALL_TEXT,
                        dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """A single-file SD3.5-medium-shaped checkpoint with the encoders named in `text` bundled."""
    from diffusion.vae.model import AutoencoderKL
    state = {"model.diffusion_model." + k: v for k, v in mmdit_state(mmdit_config(full), seed, dtype).items()}
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(vae16_config(full))
    state.update({"first_stage_model." + k: _cast(v.detach(), dtype) for k, v in vae.state_dict().items()})
    del vae
    for offset, role in enumerate(ALL_TEXT):
        if role in text:
            part = t5_state(full, seed + 4, dtype) if role == "t5xxl" else sd3_clip_state(role, full, seed + 2 + offset)
            state.update({TEXT_PREFIX.format(role) + k: _cast(v, dtype) for k, v in part.items()})
            del part
    return {k: v.contiguous() for k, v in state.items()}


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def text_encoder_file_state(role: str, full: bool = False, seed: int = 0,
                            dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """One standalone SD3 text-encoder file (clip_l / clip_g / t5xxl) with the same weights a checkpoint made with
    the same seed bundles."""
    offset = ALL_TEXT.index(role)
    part = t5_state(full, seed + 4, dtype) if role == "t5xxl" else sd3_clip_state(role, full, seed + 2 + offset)
    return {k: _cast(v, dtype).contiguous() for k, v in part.items()}


def make_sd35_controlnet(control_type: str = "canny", full: bool = False, layers: Optional[int] = None,
                         seed: int = 0, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """A random SD3.5 ControlNet in Stability's file layout (diffusion/mmdit/controlnet.py) for the (tiny or full)
    SD3 transformer of this generator's width: image-only `transformer_blocks`, `controlnet_blocks` (random, not
    zero, so their effect shows), `pos_embed_input`, diffusers-named `time_text_embed.*`, the file's unused
    `pos_embed.proj` and the `control_type` scalar (0 blur, 1 canny, 2 depth)."""
    from diffusion.mmdit.controlnet import CONTROL_TYPES, RENAMES, SD35ControlConfig, SD35ControlNet
    main = mmdit_config(full)
    heads = main.hidden_size // 64
    config = SD35ControlConfig(hidden_size=main.hidden_size, num_heads=heads, layers=layers or max(1, heads // 2),
                               main_depth=heads, double_y_emb=False, pooled_in=main.pooled_in,
                               in_channels=main.in_channels, patch_size=main.patch_size, control_type=control_type)
    torch.manual_seed(seed)
    network = SD35ControlNet(config)
    back = {new: old for old, new in RENAMES.items()}
    state = {}
    for key, value in network.state_dict().items():
        for new, old in back.items():
            if key.startswith(new):
                key = old + key[len(new):]
                break
        state[key] = value.detach().to(dtype).contiguous()
    state["pos_embed.proj.weight"] = torch.randn(main.hidden_size, main.in_channels, 2, 2).to(dtype)
    state["pos_embed.proj.bias"] = torch.randn(main.hidden_size).to(dtype)
    state["control_type"] = torch.tensor(next(k for k, v in CONTROL_TYPES.items() if v == control_type))
    return state
