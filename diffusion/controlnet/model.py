"""The ControlNet network in the original LDM layout (SD1, SD2, SDXL), with its config read from tensor shapes.

A ControlNet is a trainable copy of the UNet's encoder half (time/label embedding, input blocks, middle block) plus
a small "hint" encoder that turns the control image (pixel resolution, 0..1) into a latent-sized feature added after
the stem conv, and one 1x1 "zero conv" per input block plus one after the middle block. Its outputs are exactly the
UNet's control dict: "output" (one residual per input block, in input-block order, added to the UNet's skips) and
"middle". State-dict keys are the single-file keys with the optional `control_model.` prefix removed:
`time_embed.*`, `label_emb.*` (SDXL), `input_hint_block.N`, `input_blocks.*`, `zero_convs.N.0`, `middle_block.*`,
`middle_block_out.0`. The blocks are the UNet's own (diffusion/unet), so numerics match the UNet exactly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn

from diffusion.unet.config import UNetConfig, _Shapes, input_levels
from diffusion.unet.embeddings import timestep_embedding
from diffusion.unet.model import build_input_blocks, build_middle_block

from .base import control_family
from .control import ControlModelBase

CONTROL_PREFIX = "control_model."
# the hint encoder must bring pixels down to latent resolution (the VAE's factor 8 = three stride-2 convs)
HINT_DOWNSAMPLES = 3


@dataclass(frozen=True)
class ControlNetConfig:
    """`unet` describes the encoder half (its output-side fields are placeholders the ControlNet never builds);
    `hint_widths` are the output channels of the hint encoder's convs before the last one (which outputs
    `unet.model_channels`); `hint_channels` is the control image's channel count (3)."""

    unet: UNetConfig
    hint_channels: int = 3
    hint_widths: tuple[int, ...] = (16, 16, 32, 32, 96, 96, 256)

    def __post_init__(self):
        n = len(self.hint_widths)
        if n < 1 or n % 2 == 0:
            raise ValueError(f"a hint encoder has an odd number of inner convs (stem + pairs), got {n}")
        if (n - 1) // 2 != HINT_DOWNSAMPLES:
            raise ValueError(f"the hint encoder downsamples {(n - 1) // 2} times; a ControlNet for an 8x VAE "
                             f"needs {HINT_DOWNSAMPLES}")

    @property
    def family(self) -> str:
        return control_family(self.unet.context_dim, self.unet.adm_in_channels, self.unet.use_linear_in_transformer)

    @property
    def hint_strides(self) -> tuple[int, ...]:
        """Stride of each hint conv: the stem and each pair's first conv keep the size, each pair's second halves it
        (the published layout: conv, then (conv, stride-2 conv) per stage, then the zero conv)."""
        n = len(self.hint_widths) + 1
        return tuple(2 if 0 < k < n - 1 and k % 2 == 0 else 1 for k in range(n))


def encoder_config(*, in_channels: int, model_channels: int, channel_mult, num_res_blocks, transformer_depth,
                   transformer_depth_middle, context_dim, use_linear_in_transformer, adm_in_channels) -> UNetConfig:
    """A UNetConfig for the encoder half only: the output side (never built) gets placeholder depths 0."""
    heads = dict(num_heads=-1, num_head_channels=64) if use_linear_in_transformer else dict(num_heads=8,
                                                                                            num_head_channels=-1)
    n_out = sum(n + 1 for n in num_res_blocks)
    return UNetConfig(in_channels=in_channels, out_channels=in_channels, model_channels=model_channels,
                      channel_mult=tuple(channel_mult), num_res_blocks=tuple(num_res_blocks),
                      transformer_depth=tuple(transformer_depth), transformer_depth_output=(0,) * n_out,
                      transformer_depth_middle=transformer_depth_middle, context_dim=context_dim,
                      use_linear_in_transformer=use_linear_in_transformer, adm_in_channels=adm_in_channels, **heads)


def controlnet_config_from_unet(cfg: UNetConfig, hint_channels: int = 3,
                                hint_widths: tuple[int, ...] = (16, 16, 32, 32, 96, 96, 256)) -> ControlNetConfig:
    """The ControlNet that fits a UNet of config `cfg` (same encoder), e.g. to build synthetic ones."""
    return ControlNetConfig(cfg, hint_channels, tuple(hint_widths))


def strip_control_prefix(state_dict: Mapping[str, Any]) -> dict:
    """Remove the single-file `control_model.` prefix when present (a bare ControlNet dict passes unchanged)."""
    if any(k.startswith(CONTROL_PREFIX) for k in state_dict):
        n = len(CONTROL_PREFIX)
        return {k[n:]: v for k, v in state_dict.items() if k.startswith(CONTROL_PREFIX)}
    return dict(state_dict)


def detect_controlnet_config(state_dict: Mapping[str, Any]) -> ControlNetConfig:
    """Derive a ControlNetConfig from an LDM-layout ControlNet state dict (prefix stripped or not).

    Same rules as `diffusion.unet.config.detect_unet_config` for the shared encoder (widths from weight shapes,
    levels from downsamplers, depths by counting transformer blocks, heads by projection kind), plus the hint
    encoder's conv widths and a check that there is one zero conv per input block.
    """
    s = _Shapes(strip_control_prefix(state_dict))
    if not s.has("input_hint_block.0.weight"):
        raise ValueError("not an LDM ControlNet state dict: missing key 'input_hint_block.0.weight'")
    stem = s.shape("input_blocks.0.0.weight", ndim=(4,))
    mc, in_channels = stem[0], stem[1]
    ted = s.shape("time_embed.0.weight", ndim=(2,))
    if ted != (4 * mc, mc):
        raise ValueError(f"time_embed.0.weight has shape {list(ted)}, expected [{4 * mc}, {mc}]")
    adm = s.shape("label_emb.0.0.weight", ndim=(2,))[1] if s.has("label_emb.0.0.weight") else None

    levels, channel_mult = input_levels(s, mc)
    blocks = s.indices("input_blocks.")

    middle = s.indices("middle_block.")
    if middle == [0]:
        depth_middle = None
    elif middle == [0, 1, 2]:
        depth_middle = s.depth("middle_block.1") or None
        if depth_middle is None:
            raise ValueError("middle_block.1 is not a SpatialTransformer")
    else:
        raise ValueError(f"odd middle block: indices {middle}, expected 0 or 0..2")

    zero = s.indices("zero_convs.")
    if len(zero) != len(blocks):
        raise ValueError(f"{len(zero)} zero_convs for {len(blocks)} input blocks: expected one per input block")
    s.shape("middle_block_out.0.weight", ndim=(4,))

    hint = sorted({int(k.split(".")[1]) for k in s.keys if k.startswith("input_hint_block.")})
    if hint != list(range(0, 2 * len(hint), 2)):
        raise ValueError(f"odd hint encoder: conv indices {hint}, expected 0, 2, 4, ... (SiLU between convs)")
    convs = [s.shape(f"input_hint_block.{i}.weight", ndim=(4,)) for i in range(0, hint[-1] + 1, 2)]
    if convs[-1][0] != mc:
        raise ValueError(f"the hint encoder ends {convs[-1][0]} wide; the stem is {mc} wide")

    depth_in = tuple(d for level in levels for _, d in level)
    context_dim, linear = None, False
    if any(depth_in) or depth_middle:
        to_k, proj_in = s.first(".attn2.to_k.weight"), s.first(".proj_in.weight")
        if to_k is None or proj_in is None:
            raise ValueError("ControlNet has transformer blocks but no '*.attn2.to_k.weight' / '*.proj_in.weight'")
        context_dim = s.shape(to_k, ndim=(2,))[1]
        linear = len(s.shape(proj_in, ndim=(2, 4))) == 2
    unet = encoder_config(in_channels=in_channels, model_channels=mc, channel_mult=channel_mult,
                          num_res_blocks=tuple(len(level) for level in levels), transformer_depth=depth_in,
                          transformer_depth_middle=depth_middle, context_dim=context_dim,
                          use_linear_in_transformer=linear, adm_in_channels=adm)
    return ControlNetConfig(unet, hint_channels=convs[0][1], hint_widths=tuple(c[0] for c in convs[:-1]))


class ControlNet(nn.Module):
    """forward(x, hint, timesteps, context, y) -> {"output": [residual per input block], "middle": [residual]}."""

    def __init__(self, config: ControlNetConfig):
        super().__init__()
        self.config = config
        cfg = config.unet
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.label_emb = None
        if cfg.adm_in_channels:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))

        hint_layers, ch = [], config.hint_channels
        for width, stride in zip(config.hint_widths + (mc,), config.hint_strides):
            hint_layers += [nn.Conv2d(ch, width, 3, stride=stride, padding=1), nn.SiLU()]
            ch = width
        self.input_hint_block = nn.Sequential(*hint_layers[:-1])

        blocks, widths, ch = build_input_blocks(cfg)
        self.input_blocks = nn.ModuleList(blocks)
        self.zero_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(w, w, 1)) for w in widths])
        self.middle_block = build_middle_block(cfg, ch)
        self.middle_block_out = nn.Sequential(nn.Conv2d(ch, ch, 1))

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor | float,
                context: Optional[torch.Tensor], y: Optional[torch.Tensor] = None) -> dict:
        """x [B, in, h, w] (c_in-scaled latent), hint [B, hint_channels, 8h, 8w] in 0..1, timesteps [B] or a
        scalar, context [B, T, context_dim], y [B, adm] (SDXL). Residuals come back in the weights' dtype."""
        cfg, dtype, batch = self.config.unet, self.dtype, x.shape[0]
        if hint.shape[-2:] != (x.shape[-2] * 8, x.shape[-1] * 8):
            raise ValueError(f"hint is {tuple(hint.shape[-2:])} for a {tuple(x.shape[-2:])} latent; it must be 8x "
                             f"the latent size")
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if t.shape[0] != batch:
            t = t.expand(batch)
        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(dtype))
        if self.label_emb is not None:
            if y is None:
                raise ValueError(f"this ControlNet is size-conditioned (SDXL): it needs y [B, {cfg.adm_in_channels}]")
            emb = emb + self.label_emb(y.to(dtype))
        if context is not None:
            context = context.to(dtype)

        guided = self.input_hint_block(hint.to(dtype))
        h, outs = x.to(dtype), []
        for i, (block, zero) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided
            outs.append(zero(h))
        h = self.middle_block(h, emb, context)
        return {"output": outs, "middle": [self.middle_block_out(h)]}


class ControlNetControl(ControlModelBase):
    """A loaded ControlNet as a control model (the `diffusion.controlnet.base.ControlModel` protocol).

    Holds the network (or a model-manager handle to it) and runs it on the MODEL's device and compute dtype.
    """

    def __init__(self, network: Any, source: str = "") -> None:
        self._network = network
        self.source = source
        self.config: ControlNetConfig = self.network.config
        self.family = self.config.family

    @property
    def network(self) -> ControlNet:
        from diffusion.handles import resolve
        return resolve(self._network)

    @property
    def name(self) -> str:
        import os
        return os.path.basename(self.source) or "the ControlNet"

    def check_model(self, model: Any) -> None:
        """ValueError naming both sides when this ControlNet cannot drive `model`'s UNet."""
        ucfg, cfg = model.unet.config, self.config.unet
        family = getattr(getattr(model, "family", None), "name", "?")
        if ucfg.context_dim != cfg.context_dim or bool(ucfg.adm_in_channels) != bool(cfg.adm_in_channels):
            raise ValueError(f"{self.name} is a ControlNet for {self.family} (text context {cfg.context_dim}-wide) "
                             f"but the MODEL is {family} (context {ucfg.context_dim}-wide): use a ControlNet made for "
                             f"the model's family")
        if ucfg.num_input_blocks != cfg.num_input_blocks or ucfg.model_channels != cfg.model_channels:
            raise ValueError(f"{self.name} ({cfg.num_input_blocks} blocks, {cfg.model_channels} wide) does not fit "
                             f"the MODEL's UNet ({ucfg.num_input_blocks} blocks, {ucfg.model_channels} wide): "
                             f"it was made for another model")

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        self.check_model(model)
        return self.forward_network(x_in, hint, timesteps, context, y, device=getattr(model, "device", None),
                                    dtype=getattr(model, "dtype", None))

    def _loader(self) -> Any:
        return getattr(getattr(self._network, "residency", None), "devices", None)

    @property
    def run_dtype(self) -> torch.dtype:
        """The dtype the network computes in when called without one: the precision policy's for ControlNets when
        the model manager's device loader places it (`compute.precision`), else its weights' (on a CPU the policy
        chose them when the file was read)."""
        loader = self._loader()
        if loader is not None and getattr(loader, "active", False):
            policy = getattr(getattr(loader, "compute", None), "precision", None)
            if policy is not None:
                return policy.controlnet
            from diffusion.precision import compute_dtype
            return compute_dtype(loader.device)
        return self.network.dtype

    def forward_network(self, x_in: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor,
                        context: Optional[torch.Tensor], y: Optional[torch.Tensor], device: Any = None,
                        dtype: Optional[torch.dtype] = None) -> dict:
        """The network's residuals, run where it lives: on the device loader's device and compute dtype when the
        model manager owns it, else moved once to `device` / `dtype` (x's device, the weights' dtype by default)."""
        loader = self._loader()
        if loader is not None:  # owned by the model manager: the device loader places (and accounts) it
            device, dtype = loader.device, self.run_dtype
            placed = loader.use(self.network, dtype, keep_resident=_controlnet_keep)
        else:  # a bare network (control-LoRA builds its own per MODEL): moved here once
            device = device if device is not None else x_in.device
            dtype = dtype if dtype is not None else self.network.dtype
            net = self.network
            first = next(net.parameters())
            if first.device != torch.device(device) or first.dtype != dtype:
                net.to(device=device, dtype=dtype)
            placed = contextlib.nullcontext(net)
        with placed as net, torch.no_grad():
            return net(x_in.to(device, dtype), hint.to(device, dtype), timesteps.to(device),
                       None if context is None else context.to(device, dtype),
                       None if y is None else y.to(device, dtype))


def _controlnet_keep(name: str, module: Any) -> bool:
    """Never streamed: `time_embed.0`, whose weight's dtype the ControlNet casts its inputs to."""
    return name == "time_embed.0"
