"""Perp-Neg guidance (Armandpour et al., 2023): only the part of the negative prompt's direction that is
perpendicular to the positive one is pushed away from, so a negative that overlaps the positive does not erase it.

With predictions `pos`, `neg` and `empty` (the empty prompt), d_pos = pos - empty, d_neg = neg - empty:
    perp = d_neg - (<d_neg, d_pos> / |d_pos|^2) d_pos
    result = empty + cfg * (d_pos - neg_scale * perp)
The PerpNegGuider node is a GUIDER doing this each step; the older PerpNeg node patches a MODEL's CFG function.
Packs subclass `Guider_PerpNeg` (ComfyUI's class name) and schedule its scale.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from diffusion.sampling.guidance import Guidance, lend_controls_to_uncond, prepare_conditioning
from nodes.declare import Float, Output, Socket, node
from nodes.sampling_objects import Guider


def perp_neg(x: torch.Tensor, noise_pred_pos: torch.Tensor, noise_pred_neg: torch.Tensor,
             noise_pred_nocond: torch.Tensor, neg_scale: float, cond_scale: float) -> torch.Tensor:
    """The Perp-Neg combination of three predictions (ComfyUI's argument order; `x` is unused)."""
    d_pos = noise_pred_pos - noise_pred_nocond
    d_neg = noise_pred_neg - noise_pred_nocond
    perp = d_neg - ((d_neg * d_pos).sum() / torch.norm(d_pos) ** 2) * d_pos
    return noise_pred_nocond + cond_scale * (d_pos - perp * neg_scale)


class PerpNegGuidance(Guidance):
    """Three predictions per step (positive, negative, empty) combined by `perp_neg`, then the MODEL's post-cfg
    functions with ComfyUI's arguments (the empty prompt's included)."""

    def __init__(self, model: Any, positive: list, negative: list, empty: list, cfg: float, neg_scale: float):
        super().__init__(model, positive, negative, cfg)
        self.empty, self.neg_scale = lend_controls_to_uncond(positive, empty or []), neg_scale

    def entry_lists(self) -> list:
        return [self.positive, self.negative, self.empty]

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        pos, neg, empty = self.predict(x, sigma, [self.positive, self.negative, self.empty])
        self.uncond_denoised = neg
        result = perp_neg(x, pos, neg, empty, self.neg_scale, self.cfg)
        options = self.model_options()
        model = getattr(self.model, "model", self.model)
        for fn in options.get("sampler_post_cfg_function", ()):
            result = fn({"denoised": result, "cond": self.positive, "uncond": self.negative, "cond_scale": self.cfg,
                         "model": model, "uncond_denoised": neg, "cond_denoised": pos, "sigma": sigma,
                         "model_options": options, "input": x, "empty_cond": self.empty,
                         "empty_cond_denoised": empty})
        return result


class Guider_PerpNeg(Guider):  # noqa: N801 - ComfyUI's class name
    """GUIDER: `set_conds(positive, negative, empty_negative_prompt)`, `set_cfg(cfg, neg_scale)`."""

    def __init__(self, model_patcher: Any) -> None:
        super().__init__(model_patcher)
        self.neg_scale = 1.0

    def set_conds(self, positive: Any, negative: Any = None, empty_negative_prompt: Any = None) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative,
                              "empty_negative_prompt": empty_negative_prompt})

    def set_cfg(self, cfg: float, neg_scale: Optional[float] = None) -> None:
        self.cfg = cfg
        if neg_scale is not None:
            self.neg_scale = neg_scale

    def guidance(self, shape: Any, seed: Optional[int] = None) -> Guidance:
        model = self.model_patcher
        prep = lambda c: prepare_conditioning(c, shape, model, seed) if c is not None else []  # noqa: E731
        guidance = PerpNegGuidance(model, prep(self.positive), prep(self.negative),
                                   prep(self.conds.get("empty_negative_prompt")), self.cfg, self.neg_scale)
        return guidance

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: Optional[dict] = None,
                      seed: Optional[int] = None) -> torch.Tensor:
        if self._guidance is not None:
            self._guidance.neg_scale = self.neg_scale
        return super().predict_noise(x, timestep, model_options, seed)


@node(category="_for_testing",
      outputs=[Output("GUIDER", tooltip="Perp-Neg guidance for SamplerCustomAdvanced.")])
class PerpNegGuider:
    """Guidance that removes only the part of the negative prompt that does not overlap the positive one."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    positive = Socket("CONDITIONING", tooltip="What the image should show.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    empty_conditioning = Socket("CONDITIONING", tooltip="An empty prompt encoded with the same CLIP.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Guidance scale.")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01, tooltip="How strongly the perpendicular negative "
                      "direction is pushed away from.")

    def run(self, ctx, model, positive, negative, empty_conditioning, cfg, neg_scale):
        guider = Guider_PerpNeg(model)
        guider.set_conds(positive, negative, empty_conditioning)
        guider.set_cfg(cfg, neg_scale)
        return (guider,)


@node(category="_for_testing", display_name="Perp-Neg (DEPRECATED by PerpNegGuider)", deprecated=True,
      outputs=[Output("MODEL", tooltip="The model, its CFG replaced by Perp-Neg.")])
class PerpNeg:
    """Patch a MODEL's CFG function so every sampler uses Perp-Neg against the given empty prompt."""
    model = Socket("MODEL", tooltip="The model to patch.")
    empty_conditioning = Socket("CONDITIONING", tooltip="An empty prompt encoded with the same CLIP.")
    neg_scale = Float(1.0, min=0.0, max=100.0, step=0.01, tooltip="How strongly the perpendicular negative "
                      "direction is pushed away from.")

    def run(self, ctx, model, empty_conditioning, neg_scale):
        patched = model.clone()
        prepared: dict = {}  # latent shape -> the empty prompt's guidance, built once per run's shape

        def cfg_function(args: dict) -> torch.Tensor:
            x, sigma = args["input"], args["sigma"]
            empty = prepared.get(tuple(x.shape))
            if empty is None:
                empty = prepared[tuple(x.shape)] = Guidance(
                    patched, prepare_conditioning(empty_conditioning, x.shape, patched), None, 1.0)
            (nocond,) = empty.predict(x, sigma, [empty.positive])
            return x - perp_neg(x, args["cond_denoised"], args["uncond_denoised"], nocond, neg_scale,
                                args["cond_scale"])
        patched.set_model_sampler_cfg_function(cfg_function)
        return (patched,)


NODES = [PerpNegGuider, PerpNeg]
