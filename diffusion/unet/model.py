"""The latent-diffusion UNet (SD1.x, SD2.x, SDXL) in the original LDM module layout.

`state_dict()` keys are the checkpoint's `model.diffusion_model.*` keys with that prefix removed, so a single-file
checkpoint loads with plain `load_state_dict` and no key conversion.

ControlNet / T2I-adapter hook (`control` argument of `forward`): a dict with optional entries
  - "input":  one residual per input block, in input-block order (index i = input_blocks[i]); added to that
              block's output before it is stored as a skip and fed to the next block (T2I-adapter style);
  - "middle": a tensor, or a sequence of tensors, added to the middle block's output;
  - "output": one residual per input block, in input-block order; consumed from the end, in step with the skip
              tensors: the residual of input block i is added to skip i just before it is concatenated into its
              output block (ControlNet style: a ControlNet's zero-conv outputs, listed in input-block order).
"input" and "output" must hold exactly `config.num_input_blocks` entries; any entry may be None (no residual).

Extension hook (`transformer_options`, see attention.py): the UNet records where it is (`block` = ("input", i) /
("middle", 0) / ("output", i), `transformer_index` counting SpatialTransformers, `original_shape`) and runs the
block-level patches from `transformer_options["patches"]`:
  - emb_patch: `(emb, model_channels, options) -> emb` after the time embedding;
  - input_block_patch: `(h, options) -> h` after each input block (and its control residual), before the skip
    is stored; input_block_patch_after_skip: the same, after it is stored;
  - output_block_patch: `(h, skip, options) -> (h, skip)` before each output block's concatenation;
  - forward_timestep_embed_patch: `(layer class, handler)` pairs; a plain layer (stem conv, downsampler) that is
    an instance of the class runs as `handler(layer, x, emb, context, options, out_size, None, None, None)`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .attention import SpatialTransformer
from .config import UNetConfig
from .embeddings import timestep_embedding
from .resblock import Downsample, ResBlock, Upsample


class UNetBlock(nn.ModuleList):
    """One `input_blocks.N` / `middle_block` / `output_blocks.N` entry: layers fed what each kind needs."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
                out_size: Sequence[int] | None = None, transformer_options: dict | None = None) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, context, transformer_options)
                if transformer_options:
                    transformer_options["transformer_index"] = transformer_options.get("transformer_index", 0) + 1
            elif isinstance(layer, Upsample):
                h = layer(h, out_size)
            else:
                handler = _layer_handler(layer, transformer_options)
                h = layer(h) if handler is None else handler(layer, h, emb, context, transformer_options, out_size,
                                                             None, None, None)
        return h


def _has_patches(options: Mapping[str, Any] | None) -> bool:
    return bool(options) and bool(options.get("patches") or options.get("patches_replace"))


def _layer_handler(layer: nn.Module, options: dict | None) -> Any:
    """The forward_timestep_embed_patch handler registered for this layer's class, if any."""
    if not options:
        return None
    for layer_class, handler in (options.get("patches") or {}).get("forward_timestep_embed_patch", ()):
        if isinstance(layer, layer_class):
            return handler
    return None


def spatial_transformer(cfg: UNetConfig, channels: int, depth: int) -> SpatialTransformer:
    heads, dim_head = cfg.heads_for(channels)
    return SpatialTransformer(channels, heads, dim_head, depth, cfg.context_dim, cfg.use_linear_in_transformer)


def build_input_blocks(cfg: UNetConfig) -> tuple:
    """The encoder's `input_blocks` (stem conv, ResBlocks with optional transformers, downsamplers), the channel
    count after each block (the skips; a ControlNet's zero-conv widths), and the final channel count. Shared by the
    UNet and the ControlNet, whose encoder is a copy of the UNet's."""
    mc, ted = cfg.model_channels, cfg.time_embed_dim
    blocks = [UNetBlock([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])]
    widths, ch, depths = [mc], mc, iter(cfg.transformer_depth)
    for level, width in enumerate(cfg.level_channels):
        for _ in range(cfg.num_res_blocks[level]):
            layers = [ResBlock(ch, ted, width)]
            ch = width
            depth = next(depths)
            if depth:
                layers.append(spatial_transformer(cfg, ch, depth))
            blocks.append(UNetBlock(layers))
            widths.append(ch)
        if level != cfg.num_levels - 1:
            blocks.append(UNetBlock([Downsample(ch)]))
            widths.append(ch)
    return blocks, widths, ch


def build_middle_block(cfg: UNetConfig, ch: int) -> UNetBlock:
    """ResBlock, then (unless the config has none) transformer and a second ResBlock."""
    middle = [ResBlock(ch, cfg.time_embed_dim, ch)]
    if cfg.transformer_depth_middle is not None:
        middle += [spatial_transformer(cfg, ch, cfg.transformer_depth_middle), ResBlock(ch, cfg.time_embed_dim, ch)]
    return UNetBlock(middle)


class UNetModel(nn.Module):
    """Noise/velocity predictor eps(x, t, context[, y]) built from a UNetConfig."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        mc, ted = cfg.model_channels, cfg.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if cfg.adm_in_channels:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))
        else:
            self.label_emb = None

        blocks, skips, ch = build_input_blocks(cfg)
        self.input_blocks = nn.ModuleList(blocks)
        self.middle_block = build_middle_block(cfg, ch)

        blocks, d = [], iter(cfg.transformer_depth_output)
        for level in reversed(range(cfg.num_levels)):
            width = cfg.level_channels[level]
            for i in range(cfg.num_res_blocks[level] + 1):
                layers = [ResBlock(ch + skips.pop(), ted, width)]
                ch = width
                depth = next(d)
                if depth:
                    layers.append(spatial_transformer(cfg, ch, depth))
                if level and i == cfg.num_res_blocks[level]:
                    layers.append(Upsample(ch))
                blocks.append(UNetBlock(layers))
        self.output_blocks = nn.ModuleList(blocks)
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        """What activations run in: the weights' dtype, or `compute_dtype` when the weights are stored in another
        one and cast per layer at forward time (model_management/weight_casting.py)."""
        return getattr(self, "compute_dtype", None) or self.time_embed[0].weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float, context: torch.Tensor | None,
                y: torch.Tensor | None = None, control: Mapping[str, Any] | None = None,
                transformer_options: Mapping[str, Any] | None = None) -> torch.Tensor:
        """x [B, in, H, W], timesteps [B] (or a scalar), context [B, T, context_dim], y [B, adm] (SDXL).

        Inputs are cast to the weights' dtype; the result comes back in x's dtype. `transformer_options` carries
        extension patches (module docstring); it is updated in place as the blocks run.
        """
        options = transformer_options if _has_patches(transformer_options) else None  # else the plain path
        patches = (options.get("patches") or {}) if options else {}
        if options:
            options["original_shape"] = list(x.shape)
            options["transformer_index"] = 0
        dtype, out_dtype, batch = self.dtype, x.dtype, x.shape[0]
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if t.shape[0] != batch:
            if t.shape[0] != 1:
                raise ValueError(f"{t.shape[0]} timesteps for a batch of {batch}")
            t = t.expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(dtype))
        for patch in patches.get("emb_patch", ()):
            emb = patch(emb, self.config.model_channels, options)
        if self.label_emb is not None:
            if y is None:
                raise ValueError(f"this UNet is class/size-conditioned: pass y [B, {self.config.adm_in_channels}]")
            emb = emb + self.label_emb(y.to(dtype))
        if context is not None:
            context = context.to(dtype)

        ctrl_in = ctrl_mid = ctrl_out = None
        if control:
            ctrl_in, ctrl_mid, ctrl_out = (control.get("input"), control.get("middle"), control.get("output"))
            for name, seq in (("input", ctrl_in), ("output", ctrl_out)):
                if seq is not None and len(seq) != len(self.input_blocks):
                    raise ValueError(f"control[{name!r}] has {len(seq)} entries; this UNet has "
                                     f"{len(self.input_blocks)} input blocks")

        h = x.to(dtype)
        skips = []
        for i, block in enumerate(self.input_blocks):
            if options:
                options["block"] = ("input", i)
            h = block(h, emb, context, None, options)
            if ctrl_in is not None and ctrl_in[i] is not None:
                h = h + ctrl_in[i].to(h.dtype)
            for patch in patches.get("input_block_patch", ()):
                h = patch(h, options)
            skips.append(h)
            for patch in patches.get("input_block_patch_after_skip", ()):
                h = patch(h, options)

        if options:
            options["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, None, options)
        if ctrl_mid is not None:
            for r in ([ctrl_mid] if torch.is_tensor(ctrl_mid) else ctrl_mid):
                if r is not None:
                    h = h + r.to(h.dtype)

        for i, block in enumerate(self.output_blocks):
            if options:
                options["block"] = ("output", i)
            skip = skips.pop()
            if ctrl_out is not None and ctrl_out[len(skips)] is not None:
                skip = skip + ctrl_out[len(skips)].to(skip.dtype)
            for patch in patches.get("output_block_patch", ()):
                h, skip = patch(h, skip, options)
            out_size = skips[-1].shape[-2:] if skips else None
            h = block(torch.cat([h, skip], dim=1), emb, context, out_size, options)
        return self.out(h).to(out_dtype)
