"""Stability's ControlNets for SD3.5 large (blur, canny, depth: `sd3.5_large_controlnet_*.safetensors`).

The file holds a small stack of image-only transformer blocks (`transformer_blocks.N`, each an MMDiT image stream
with its own adaLN modulation but no text stream), one zero-initialised linear layer per block
(`controlnet_blocks.N`), a patch embedding for the control latent (`pos_embed_input`), and its own timestep and
pooled-text embedders (diffusers' names, `time_text_embed.*`). The control image is encoded by the SD3 VAE into
the model's latent space first (so the apply node needs its `vae` input); the blur model takes it as is, canny as
`a * 255 * 0.5 + 0.5`, depth as `1 - a` (the reference's preprocessing, by the file's `control_type`).

Per model call: the noisy latent is patch-embedded with the *main* MMDiT's `x_embedder` (the file's own copy is
not used, as in the reference), given a fresh sin-cos position grid centred on 7.5 (`sincos_grid`), plus the
embedded control latent; c = t-embedding + y-embedding of the pooled text. The blocks run in sequence and each
output, through its linear layer, is the residual for ceil(main depth / blocks) consecutive main blocks, added to
the image tokens after them (diffusion/mmdit/model.py). Variants whose y-embedder is square (`double_y_emb`, the
8B models) instead embed y with the main model's y-embedder first and feed every block the same input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from diffusion.unet.embeddings import timestep_embedding

from .config import HEAD_DIM, MMDiTConfig
from .model import Embedder, StreamBlock, attention

FAMILY = "sd3"
RENAMES = {"time_text_embed.timestep_embedder.linear_1.": "t_embedder.mlp.0.",
           "time_text_embed.timestep_embedder.linear_2.": "t_embedder.mlp.2.",
           "time_text_embed.text_embedder.linear_1.": "y_embedder.mlp.0.",
           "time_text_embed.text_embedder.linear_2.": "y_embedder.mlp.2."}
UNUSED = ("pos_embed.", "x_embedder.")  # the patch embedding: the main model's is used
CONTROL_TYPES = {0: "blur", 1: "canny", 2: "depth"}


def is_sd35_controlnet(state: Dict[str, Any]) -> bool:
    return "controlnet_blocks.0.weight" in state and "pos_embed_input.proj.weight" in state \
        and "transformer_blocks.0.adaLN_modulation.1.bias" in state


def is_sd3_diffusers_controlnet(state: Dict[str, Any]) -> bool:
    """SD3 ControlNets in diffusers' layout (InstantX, diffusers' own): joint blocks under diffusers' names."""
    return "controlnet_blocks.0.weight" in state and "pos_embed_input.proj.weight" in state \
        and not is_sd35_controlnet(state)


@dataclass
class SD35ControlConfig:
    hidden_size: int
    num_heads: int
    layers: int
    main_depth: int  # the main model's joint blocks the residuals are spread over (= heads: 38 for large)
    double_y_emb: bool
    pooled_in: int = 2048
    in_channels: int = 16
    patch_size: int = 2
    control_type: str = "blur"

    def block_config(self) -> MMDiTConfig:
        return MMDiTConfig(hidden_size=self.hidden_size, num_heads=self.num_heads, mlp_hidden=4 * self.hidden_size,
                           qk_norm=False, in_channels=self.in_channels, patch_size=self.patch_size)


def convert_state(state: Dict[str, torch.Tensor]) -> tuple:
    """(renamed state dict, control type) of a file's tensors."""
    out: Dict[str, torch.Tensor] = {}
    control_type = -1
    for key, value in state.items():
        if key == "control_type":
            control_type = int(round(float(value.reshape(-1)[0])))
            continue
        if key.startswith(UNUSED):
            continue
        for old, new in RENAMES.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out, CONTROL_TYPES.get(control_type, "blur")


def detect_config(state: Dict[str, torch.Tensor], control_type: str) -> SD35ControlConfig:
    y_weight = state.get("y_embedder.mlp.0.weight")
    if y_weight is None:
        raise ValueError("an SD3.5 ControlNet without its pooled-text embedder (time_text_embed.text_embedder)")
    hidden = y_weight.shape[0]
    if hidden % HEAD_DIM:
        raise ValueError(f"SD3.5 ControlNet width {hidden} is not a multiple of {HEAD_DIM}")
    layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("transformer_blocks."))
    patch = state["pos_embed_input.proj.weight"]
    return SD35ControlConfig(hidden_size=hidden, num_heads=hidden // HEAD_DIM, layers=layers,
                             main_depth=hidden // HEAD_DIM, double_y_emb=y_weight.shape[0] == y_weight.shape[1],
                             pooled_in=y_weight.shape[1], in_channels=patch.shape[1], patch_size=patch.shape[2],
                             control_type=control_type)


def sincos_grid(dim: int, w: int, h: int, centre: float = 7.5, magnitude: float = 7.5) -> torch.Tensor:
    """[h*w, dim] sin-cos positions on a grid spanning centre +- magnitude along the shorter side (the longer
    side proportionally more): the first half of the channels encodes the column, the second the row."""
    small = min(h, w)
    rows = torch.linspace(centre - h / small * magnitude, centre + h / small * magnitude, h)
    cols = torch.linspace(centre - w / small * magnitude, centre + w / small * magnitude, w)
    grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")

    def one_axis(positions: torch.Tensor, width: int) -> torch.Tensor:
        freqs = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float32) / (width / 2))
        angles = positions.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.cat([one_axis(grid_cols, dim // 2), one_axis(grid_rows, dim // 2)], dim=1)


class ControlPatchEmbed(nn.Module):
    def __init__(self, cfg: SD35ControlConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SD35ControlNet(nn.Module):
    """The network: `compute` returns {"output": [one residual per main joint block]}, from a latent hint."""

    def __init__(self, config: SD35ControlConfig, name: str = ""):
        super().__init__()
        self.config = cfg = config
        self.name = name or f"SD3.5 {cfg.control_type} ControlNet"
        block = cfg.block_config()
        dim = cfg.hidden_size
        self.t_embedder = Embedder(256, dim)
        self.y_embedder = Embedder(cfg.pooled_in, dim)
        self.transformer_blocks = nn.ModuleList(StreamBlock(block) for _ in range(cfg.layers))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(cfg.layers))
        self.pos_embed_input = ControlPatchEmbed(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, "compute_dtype", None) or self.controlnet_blocks[0].weight.dtype

    def preprocess_hint(self, image: torch.Tensor) -> torch.Tensor:
        """The control image [B, 3, H, W] in 0..1 as this model's training saw it, before VAE encoding."""
        if self.config.control_type == "canny":
            return image * 255 * 0.5 + 0.5
        if self.config.control_type == "depth":
            return 1.0 - image
        return image

    def _block(self, block: StreamBlock, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        qkv, rest = block.pre_attention(x, c)
        return block.post_attention(attention(*qkv), *rest)

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        """x_in [B, 16, h, w] (the flow model's input is x itself), timesteps [B] (sigma * 1000), y [B, 2048],
        hint [B, 16, h, w] (the processed control latent); model: the MODEL whose MMDiT is controlled."""
        cfg, dtype = self.config, self.dtype
        main = model.unet
        p = cfg.patch_size
        if x_in.shape[2] % p or x_in.shape[3] % p:
            raise ValueError(f"the SD3.5 ControlNet needs a latent whose sides are multiples of {p}")
        x = main.x_embedder(x_in.to(main.dtype)).to(dtype)
        if not cfg.double_y_emb:
            x = x + sincos_grid(cfg.hidden_size, (x_in.shape[3] + 1) // p, (x_in.shape[2] + 1) // p).to(x)
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        c = self.t_embedder(timestep_embedding(t, 256).to(dtype))
        if y is None:
            raise ValueError("the SD3.5 ControlNet needs the pooled text (y)")
        pooled = y.to(dtype)
        if cfg.double_y_emb:
            pooled = main.y_embedder(pooled.to(main.dtype)).to(dtype)
        c = c + self.y_embedder(pooled)
        x = x + self.pos_embed_input(hint.to(dtype))
        repeat = math.ceil(cfg.main_depth / cfg.layers)
        outputs: List[torch.Tensor] = []
        for block, linear in zip(self.transformer_blocks, self.controlnet_blocks):
            out = self._block(block, x, c)
            if not cfg.double_y_emb:
                x = out
            outputs.extend([linear(out)] * repeat)
        return {"output": outputs}


def build_sd35_controlnet(state: Dict[str, torch.Tensor], name: str = "") -> SD35ControlNet:
    """The network of an SD3.5 ControlNet file's state dict (ValueError when the weights do not fit)."""
    converted, control_type = convert_state(state)
    config = detect_config(converted, control_type)
    with torch.device("meta"):
        model = SD35ControlNet(config, name)
    missing, unexpected = model.load_state_dict(converted, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the SD3.5 ControlNet weights do not fit the detected layout: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval().requires_grad_(False)


class SD35ControlNetControl:
    """A loaded SD3.5 ControlNet as a control model for the control runtime (diffusion/controlnet/control.py):
    ComfyUI's `copy()` / `set_cond_hint` interface through ControlModelBase, the network behind a model-manager
    handle (`_network`), run where the device loader places it (on a plain CPU: as loaded)."""

    family = FAMILY
    hint_in_latent = True

    def __init__(self, network: Any, source: str = "") -> None:
        self._network = network
        self.source = source
        self.config: SD35ControlConfig = self.network.config

    @property
    def network(self) -> SD35ControlNet:
        from diffusion.handles import resolve
        return resolve(self._network)

    @property
    def name(self) -> str:
        import os
        return os.path.basename(self.source) or "the SD3.5 ControlNet"

    def copy(self):
        from diffusion.controlnet.control import ControlRuntime
        return ControlRuntime(self, None)

    def preprocess_hint(self, image: torch.Tensor) -> torch.Tensor:
        return self.network.preprocess_hint(image)

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        import contextlib
        main = getattr(model.unet, "config", None)
        if getattr(main, "hidden_size", None) != self.config.hidden_size or \
                len(getattr(model.unet, "joint_blocks", ())) != self.config.main_depth:
            raise ValueError(f"{self.name} is made for SD3.5 large ({self.config.main_depth} blocks, "
                             f"{self.config.hidden_size} wide); the MODEL's transformer does not match")
        loader = getattr(getattr(self._network, "residency", None), "devices", None)
        placed = loader.use(self.network, model.dtype) if loader is not None and loader.active \
            else contextlib.nullcontext(self.network)
        with placed as net, torch.no_grad():
            return net.compute(x_in, timesteps, context, y, hint, model)
