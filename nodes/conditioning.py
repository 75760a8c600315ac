"""Conditioning nodes: combine, average, concatenate, and restrict conditioning to areas, masks and timestep ranges.

CONDITIONING is a list of `[cond_tensor [B, tokens, dim], options]`; the options dict carries `pooled_output` and
whatever the sampler should honour (`area`, `strength`, `mask`, `start_percent`, ...). Nodes never modify their
input: every entry is copied before it is changed, so cached upstream results stay intact.
"""
from __future__ import annotations

import torch

from nodes.declare import MAX_RESOLUTION, Combo, Float, Int, Output, Socket, node

COND = "CONDITIONING"


def _with(conditioning: list, **options) -> list:
    """A copy of `conditioning` with `options` set on every entry."""
    out = []
    for cond, opts in conditioning:
        updated = dict(opts)
        updated.update(options)
        out.append([cond, updated])
    return out


@node(category="conditioning", display_name="Conditioning (Combine)",
      outputs=[Output(COND, tooltip="Both conditionings; the sampler averages their predictions.")])
class ConditioningCombine:
    """Use two conditionings together: each is evaluated and their predictions are combined."""
    conditioning_1 = Socket(COND, tooltip="First conditioning.")
    conditioning_2 = Socket(COND, tooltip="Second conditioning.")

    def run(self, ctx, conditioning_1, conditioning_2):
        return (list(conditioning_1) + list(conditioning_2),)


def _fit_tokens(source: torch.Tensor, length: int) -> torch.Tensor:
    """Truncate or zero-pad `source` [B, T, D] to `length` tokens."""
    if source.shape[1] >= length:
        return source[:, :length]
    pad = torch.zeros(source.shape[0], length - source.shape[1], source.shape[2], dtype=source.dtype,
                      device=source.device)
    return torch.cat([source, pad], dim=1)


@node(category="conditioning", outputs=[Output(COND, tooltip="The blended conditioning.")])
class ConditioningAverage:
    """Blend one conditioning into another: strength 1 keeps `conditioning_to`, 0 gives `conditioning_from`."""
    conditioning_to = Socket(COND, tooltip="The conditioning to blend into (its options are kept).")
    conditioning_from = Socket(COND, tooltip="The conditioning to blend in (only its first entry is used).")
    conditioning_to_strength = Float(1.0, min=0.0, max=1.0, step=0.01,
                                     tooltip="Weight of `conditioning_to`; the rest goes to `conditioning_from`.")

    def run(self, ctx, conditioning_to, conditioning_from, conditioning_to_strength):
        if not conditioning_from:
            return (conditioning_to,)
        w = conditioning_to_strength
        source, source_opts = conditioning_from[0]
        source_pooled = source_opts.get("pooled_output")
        out = []
        for cond, opts in conditioning_to:
            blended = cond * w + _fit_tokens(source, cond.shape[1]).to(cond) * (1.0 - w)
            updated = dict(opts)
            pooled = opts.get("pooled_output")
            if pooled is not None and source_pooled is not None:
                updated["pooled_output"] = pooled * w + source_pooled.to(pooled) * (1.0 - w)
            elif source_pooled is not None:
                updated["pooled_output"] = source_pooled
            out.append([blended, updated])
        return (out,)


@node(category="conditioning", display_name="Conditioning (Concat)",
      outputs=[Output(COND, tooltip="Each entry of `conditioning_to` with the tokens of `conditioning_from` added.")])
class ConditioningConcat:
    """Append the tokens of one conditioning to another (like a longer prompt, without re-weighting)."""
    conditioning_to = Socket(COND, tooltip="The conditioning to extend.")
    conditioning_from = Socket(COND, tooltip="The tokens to append (only its first entry is used).")

    def run(self, ctx, conditioning_to, conditioning_from):
        if not conditioning_from:
            return (conditioning_to,)
        source = conditioning_from[0][0]
        out = []
        for cond, opts in conditioning_to:
            if source.shape[-1] != cond.shape[-1]:
                raise ValueError(f"conditioning_from has {source.shape[-1]}-dim tokens but conditioning_to has "
                                 f"{cond.shape[-1]}: they come from different text encoders")
            out.append([torch.cat([cond, source.to(cond)], dim=1), dict(opts)])
        return (out,)


@node(category="conditioning", display_name="Conditioning (Set Area)",
      outputs=[Output(COND, tooltip="The conditioning, applied only inside the area.")])
class ConditioningSetArea:
    """Apply a conditioning to a rectangle of the image (in pixels; multiples of 8)."""
    conditioning = Socket(COND, tooltip="The conditioning to restrict.")
    width = Int(64, min=64, max=MAX_RESOLUTION, step=8, tooltip="Area width in pixels.")
    height = Int(64, min=64, max=MAX_RESOLUTION, step=8, tooltip="Area height in pixels.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Left edge in pixels.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Top edge in pixels.")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="How strongly the area conditioning counts.")

    def run(self, ctx, conditioning, width, height, x, y, strength):
        area = (height // 8, width // 8, y // 8, x // 8)
        return (_with(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


@node(category="conditioning", display_name="Conditioning (Set Area with Percentage)",
      outputs=[Output(COND, tooltip="The conditioning, applied only inside the area.")])
class ConditioningSetAreaPercentage:
    """Apply a conditioning to a rectangle given as fractions of the image size."""
    conditioning = Socket(COND, tooltip="The conditioning to restrict.")
    width = Float(1.0, min=0, max=1.0, step=0.01, tooltip="Area width as a fraction of the image width.")
    height = Float(1.0, min=0, max=1.0, step=0.01, tooltip="Area height as a fraction of the image height.")
    x = Float(0, min=0, max=1.0, step=0.01, tooltip="Left edge as a fraction of the image width.")
    y = Float(0, min=0, max=1.0, step=0.01, tooltip="Top edge as a fraction of the image height.")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="How strongly the area conditioning counts.")

    def run(self, ctx, conditioning, width, height, x, y, strength):
        area = ("percentage", height, width, y, x)
        return (_with(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


@node(category="conditioning", outputs=[Output(COND, tooltip="The conditioning with its strength set.")])
class ConditioningSetAreaStrength:
    """Set how strongly a conditioning counts where it applies."""
    conditioning = Socket(COND, tooltip="The conditioning to change.")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="The new strength.")

    def run(self, ctx, conditioning, strength):
        return (_with(conditioning, strength=strength),)


@node(category="conditioning", display_name="Conditioning (Set Mask)",
      outputs=[Output(COND, tooltip="The conditioning, weighted by the mask.")])
class ConditioningSetMask:
    """Apply a conditioning where a mask is white (weighted by the mask's value)."""
    conditioning = Socket(COND, tooltip="The conditioning to restrict.")
    mask = Socket("MASK", tooltip="Where the conditioning applies (1 = fully).")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01, tooltip="How strongly the masked conditioning counts.")
    set_cond_area = Combo(["default", "mask bounds"],
                          tooltip="'mask bounds' samples only the mask's bounding box for this conditioning.")

    def run(self, ctx, conditioning, mask, strength, set_cond_area):
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim != 3:
            raise ValueError(f"mask must be [H, W] or [B, H, W], got shape {list(mask.shape)}")
        return (_with(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default",
                      mask_strength=strength),)


@node(category="advanced/conditioning/flux", display_name="FluxGuidance",
      outputs=[Output(COND, tooltip="The conditioning carrying the guidance value.")])
class FluxGuidance:
    """Set the guidance strength a guidance-distilled model (Flux-dev) is conditioned on; models without a
    guidance input ignore it. It replaces CFG for such models: sample them at cfg 1."""
    conditioning = Socket(COND, tooltip="The conditioning to set it on.")
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1, tooltip="The distilled guidance (Flux-dev: 3.5 typical).")

    def run(self, ctx, conditioning, guidance):
        return (_with(conditioning, guidance=guidance),)


@node(category="advanced/conditioning", outputs=[Output(COND, tooltip="All-zero conditioning.")])
class ConditioningZeroOut:
    """Replace a conditioning (and its pooled output) by zeros: a truly empty prompt."""
    conditioning = Socket(COND, tooltip="The conditioning whose shape to keep.")

    def run(self, ctx, conditioning):
        out = []
        for cond, opts in conditioning:
            updated = dict(opts)
            if opts.get("pooled_output") is not None:
                updated["pooled_output"] = torch.zeros_like(opts["pooled_output"])
            out.append([torch.zeros_like(cond), updated])
        return (out,)


@node(category="advanced/conditioning",
      outputs=[Output(COND, tooltip="The conditioning, active only during part of the sampling.")])
class ConditioningSetTimestepRange:
    """Use a conditioning only between two points of the sampling (0 = first step, 1 = last)."""
    conditioning = Socket(COND, tooltip="The conditioning to restrict.")
    start = Float(0.0, min=0.0, max=1.0, step=0.001, tooltip="Where it starts applying (fraction of sampling).")
    end = Float(1.0, min=0.0, max=1.0, step=0.001, tooltip="Where it stops applying (fraction of sampling).")

    def run(self, ctx, conditioning, start, end):
        if start > end:
            raise ValueError(f"start ({start}) must not be after end ({end})")
        return (_with(conditioning, start_percent=start, end_percent=end),)


NODES = [ConditioningCombine, ConditioningAverage, ConditioningConcat, ConditioningSetArea,
         ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask, ConditioningZeroOut,
         ConditioningSetTimestepRange, FluxGuidance]
