"""CLIP vision towers (the image half of CLIP): what IPAdapter, unCLIP and style models read images with.

The network is transformers' CLIPVisionModelWithProjection, configured from the tensor shapes of the file, so
OpenAI ViT-L/14 (224 and 336), LAION ViT-H/14 and ViT-bigG/14 all load without downloads or size tables. Files
come in two layouts: transformers' (`vision_model.*`, `visual_projection.weight`; what the clip_vision folder
usually holds) and OpenCLIP's (`visual.*`, e.g. inside unCLIP checkpoints under `embedder.model.`), converted
here by name: OpenCLIP fuses q/k/v into one `in_proj` and stores the projection transposed.

`encode(pixels)` gives what ComfyUI's CLIP_VISION_OUTPUT holds: the last hidden state (before the final norm),
the penultimate layer's hidden state (what IPAdapter Plus uses), and the projected image embedding.

SigLIP towers (Flux Redux's `sigclip_vision_patch14_384`: transformers' SiglipVisionModel layout, no class token,
no pre-norm) load as transformers' SiglipVisionModel; their last hidden state is after the final norm (as
ComfyUI's), normalisation is 0.5 / 0.5, and -- as ComfyUI's tower has neither projection nor pooling head -- the
"image embedding" is that last hidden state again.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's published normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)  # SigLIP's: pixels mapped to -1..1

HF_PREFIX = "vision_model."
OPENCLIP_MARK = "visual.transformer.resblocks.0.attn.in_proj_weight"
FILE_PREFIXES = ("embedder.model.", "conditioner.embedders.0.open_clip.model.", "clip_vision_model.", "")
# Heads are not visible in the weights; the published towers use 16 (ViT-B/16: 12).
HEADS_BY_WIDTH = {768: 12, 1024: 16, 1152: 16, 1280: 16, 1664: 16}  # 1152: SigLIP so400m (72 per head)
_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")


def clip_preprocess(image: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> [B, 3, size, size] normalised: the short side scaled to `size` (bicubic,
    antialiased) and centre-cropped, or (crop=False) the whole image stretched to size x size."""
    pixels = image[..., :3].movedim(-1, 1).float()
    height, width = pixels.shape[-2:]
    if crop:
        scale = size / min(height, width)
        target = (round(scale * height), round(scale * width))
    else:
        target = (size, size)
    pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
    top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
    pixels = pixels[..., top:top + size, left:left + size].clamp(0.0, 1.0)
    pixels = (pixels * 255).round() / 255  # the 8-bit image CLIP was trained on
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


# -- layouts -----------------------------------------------------------------------------------------------------
def strip_prefix(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The vision tower's own keys, wherever the file keeps them."""
    for prefix in FILE_PREFIXES:
        if f"{prefix}{HF_PREFIX}embeddings.patch_embedding.weight" in state or f"{prefix}{OPENCLIP_MARK}" in state:
            if not prefix:
                return state
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    raise ValueError("not a CLIP vision model: no vision_model.embeddings.patch_embedding.weight or "
                     "visual.transformer.resblocks.* weights found")


def convert_openclip(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """OpenCLIP `visual.*` keys -> transformers' names."""
    out: Dict[str, torch.Tensor] = {}
    top = {"visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
           "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
           "visual.ln_post.weight": "vision_model.post_layernorm.weight",
           "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
    block = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key.startswith("visual.transformer.resblocks."):
            index, rest = key[len("visual.transformer.resblocks."):].split(".", 1)
            base = f"vision_model.encoder.layers.{index}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]  # weight / bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}.{kind}"] = part.contiguous()
                continue
            stem, leaf = rest.rsplit(".", 1)
            if stem in block:
                out[f"{base}{block[stem]}.{leaf}"] = value
    return out


def to_transformers_layout(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """(state dict in transformers' names, "hf" | "openclip")."""
    state = strip_prefix(state)
    if OPENCLIP_MARK in state:
        return convert_openclip(state), "openclip"
    keep = {k: v for k, v in state.items() if k.startswith(HF_PREFIX) or k == "visual_projection.weight"}
    return keep, "hf"


def _tower_shapes(state: Dict[str, torch.Tensor], num_heads: Optional[int], what: str) -> tuple:
    """(width, patch size, position rows, MLP width, layers, heads) of a vision tower in transformers' names."""
    try:
        patch = state["vision_model.embeddings.patch_embedding.weight"]
        positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
        fc1 = state["vision_model.encoder.layers.0.mlp.fc1.weight"]
    except KeyError as exc:
        raise ValueError(f"{what} weights lack {exc.args[0]}") from None
    layers = sorted({int(m.group(1)) for k in state for m in [_LAYER.match(k)] if m})
    if layers != list(range(len(layers))):
        raise ValueError(f"{what} layers are not numbered 0..n-1 (found {layers[:8]}...)")
    width, _, patch_size, _ = patch.shape
    heads = num_heads or HEADS_BY_WIDTH.get(width) or (width // 64 if width % 64 == 0 else None)
    if not heads or width % heads:
        raise ValueError(f"cannot tell the attention heads of a width-{width} {what} tower; pass num_heads")
    return width, patch_size, positions, fc1.shape[0], len(layers), heads


def is_siglip(state: Dict[str, torch.Tensor]) -> bool:
    """SigLIP towers (Flux Redux's sigclip_vision_patch14_384) have no class token and no pre-norm."""
    return (f"{HF_PREFIX}embeddings.patch_embedding.weight" in state
            and f"{HF_PREFIX}embeddings.class_embedding" not in state and f"{HF_PREFIX}pre_layrnorm.weight" not in state)


def derive_siglip_config(state: Dict[str, torch.Tensor], num_heads: Optional[int] = None):
    """A SiglipVisionConfig from the shapes (a square patch grid, no class token)."""
    from transformers import SiglipVisionConfig
    width, patch_size, positions, mlp, layers, heads = _tower_shapes(state, num_heads, "SigLIP")
    grid = round(positions ** 0.5)
    if grid * grid != positions:
        raise ValueError(f"SigLIP position embedding has {positions} rows: not a square grid")
    config = SiglipVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=layers,
                                num_attention_heads=heads, image_size=grid * patch_size, patch_size=patch_size,
                                hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, attention_dropout=0.0,
                                vision_use_head=False)  # ComfyUI's SigLIP tower has no pooling head either
    config._attn_implementation = "sdpa"
    return config


def derive_config(state: Dict[str, torch.Tensor], num_heads: Optional[int] = None,
                  hidden_act: Optional[str] = None):
    """A CLIPVisionConfig from the shapes. OpenAI's ViT-L/14 (width 1024, 24 layers) uses quick_gelu, the
    OpenCLIP-trained towers gelu."""
    from transformers import CLIPVisionConfig

    width, patch_size, positions, mlp, depth, heads = _tower_shapes(state, num_heads, "CLIP vision")
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise ValueError(f"CLIP vision position embedding has {positions} rows: not a square grid plus a class token")
    projection = state.get("visual_projection.weight")
    act = hidden_act or ("quick_gelu" if (width, depth) == (1024, 24) else "gelu")
    config = CLIPVisionConfig(hidden_size=width, intermediate_size=mlp, num_hidden_layers=depth,
                              num_attention_heads=heads, image_size=grid * patch_size, patch_size=patch_size,
                              projection_dim=projection.shape[0] if projection is not None else width,
                              hidden_act=act, layer_norm_eps=1e-5, attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    return config


def _tower(model: nn.Module) -> nn.Module:
    """The vision transformer itself (transformers wraps it as `vision_model`, except SigLIP in recent releases)."""
    return getattr(model, "vision_model", model)


class ClipVisionEncoder(nn.Module):
    """The vision tower with its projection; `encode(pixels)` -> dict of the outputs packs read."""

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        self.model = model
        self.layout = layout  # "hf", "openclip" or "siglip"
        self.mean, self.std = (SIGLIP_MEAN, SIGLIP_STD) if layout == "siglip" else (CLIP_MEAN, CLIP_STD)

    @classmethod
    def from_state_dict(cls, state: Dict[str, torch.Tensor], *, num_heads: Optional[int] = None,
                        hidden_act: Optional[str] = None, dtype: Optional[torch.dtype] = None) -> "ClipVisionEncoder":
        from transformers import CLIPVisionModelWithProjection, SiglipVisionModel

        converted, layout = to_transformers_layout(state)
        if layout == "hf" and is_siglip(converted):
            layout, config = "siglip", derive_siglip_config(converted, num_heads)
        else:
            config = derive_config(converted, num_heads, hidden_act)
            if "visual_projection.weight" not in converted:  # a tower saved without its projection: identity
                converted["visual_projection.weight"] = torch.eye(config.hidden_size)
        dtype = dtype or converted["vision_model.embeddings.patch_embedding.weight"].dtype
        with torch.device("meta"):
            model = SiglipVisionModel(config) if layout == "siglip" else CLIPVisionModelWithProjection(config)
        if not hasattr(model, "vision_model"):  # transformers releases whose SigLIP model has no wrapper level
            converted = {k[len(HF_PREFIX):] if k.startswith(HF_PREFIX) else k: v for k, v in converted.items()}
        result = model.load_state_dict({k: v.to(dtype) for k, v in converted.items()}, strict=False, assign=True)
        missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"CLIP vision weights are incomplete; missing {', '.join(missing[:6])}"
                             f"{' ...' if len(missing) > 6 else ''}")
        embeddings = _tower(model).embeddings
        embeddings.register_buffer("position_ids", torch.arange(embeddings.num_positions)[None], persistent=False)
        model.eval().requires_grad_(False)
        return cls(model, layout)

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def dtype(self) -> torch.dtype:
        return _tower(self.model).embeddings.patch_embedding.weight.dtype

    @torch.no_grad()
    def hidden(self, pixels: torch.Tensor, intermediate_output: Any = -2) -> tuple:
        """(last hidden state, the hidden state after layer `intermediate_output` -- negative from the end, "all"
        for every layer's stacked, None for none --, image_embeds) of normalised pixels [B, 3, S, S]."""
        weight = _tower(self.model).embeddings.patch_embedding.weight
        out = self.model(pixel_values=pixels.to(device=weight.device, dtype=weight.dtype), output_hidden_states=True)
        layers = out.hidden_states[1:]  # after each layer (the first entry is the embeddings)
        if intermediate_output == "all":
            middle = torch.stack(layers, dim=1)
        elif intermediate_output is None:
            middle = None
        else:
            middle = layers[int(intermediate_output)]
        # SigLIP: the whole normed last hidden state, as ComfyUI's tower (no projection, no pooling head) gives it
        embeds = out.last_hidden_state if self.layout == "siglip" else out.image_embeds
        return out.last_hidden_state, middle, embeds

    def encode(self, pixels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Normalised pixels [B, 3, S, S] -> last_hidden_state, penultimate_hidden_state, image_embeds."""
        last, penultimate, embeds = self.hidden(pixels, -2)
        return {"last_hidden_state": last, "penultimate_hidden_state": penultimate, "image_embeds": embeds}
