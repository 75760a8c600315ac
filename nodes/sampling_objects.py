"""The objects on NOISE, GUIDER and SAMPLER sockets, with ComfyUI's interfaces (packs build and subclass them).

- NOISE: `seed` and `generate_noise(latent_dict)` (RandomNoiseSource, NoNoise).
- SAMPLER: `SamplerChoice` by name, or `CustomSampler` around a pack's k-diffusion-style function
  `fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **options)` (ComfyUI's KSAMPLER).
- GUIDER: `Guider`, ComfyUI's CFGGuider: `set_conds`, `set_cfg`, `predict_noise(x, sigma, model_options, seed)`
  (the denoised prediction; packs override it) and `sample(noise, latent_image, sampler, sigmas, denoise_mask,
  callback, disable_pbar, seed)`. Our own guidance (areas, masks, ControlNets, CFG, the MODEL's hooks) is what the
  default predict_noise runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from diffusion.sampling.guidance import Guidance, lend_controls_to_uncond, prepare_conditioning
from diffusion.sampling.ksampler import SamplerChoice, prepare_noise, run_sampler


@dataclass
class RandomNoiseSource:
    """ComfyUI's Noise_RandomNoise: the seed's noise for a latent (batch_index honoured)."""
    seed: int

    def generate_noise(self, latent: dict) -> torch.Tensor:
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))

    generate = generate_noise


@dataclass
class NoNoise:
    """ComfyUI's Noise_EmptyNoise: zeros."""
    seed: int = 0

    def generate_noise(self, latent: dict) -> torch.Tensor:
        return torch.zeros_like(latent["samples"], dtype=torch.float32)

    generate = generate_noise


class CustomSampler(SamplerChoice):
    """A SAMPLER around a pack's sampling function (ComfyUI's KSAMPLER(sampler_function, extra_options))."""

    def __init__(self, sampler_function: Callable, extra_options: Optional[dict] = None,
                 inpaint_options: Optional[dict] = None) -> None:
        super().__init__(getattr(sampler_function, "__name__", "custom"), dict(extra_options or {}))
        self.sampler_function = sampler_function
        self.extra_options = self.options
        self.inpaint_options = dict(inpaint_options or {})

    @property
    def function(self) -> Callable:
        fn = self.sampler_function

        def run(model, x, sigmas, extra_args=None, callback=None, **options):
            return fn(model, x, sigmas, extra_args=extra_args, callback=callback, disable=True, **options)
        return run


class DualGuidance(Guidance):
    """Two positive conditionings and a negative: regular = neg + s2(c2 - neg) + s1(c1 - c2); nested applies the
    cond2-vs-negative guidance on top of the cond1-vs-cond2 guidance."""

    def __init__(self, model, cond1, cond2, negative, cfg1, cfg2, style):
        super().__init__(model, cond1, negative, cfg1)
        self.cond2, self.cfg2, self.style = lend_controls_to_uncond(cond1, cond2 or []), cfg2, style

    def entry_lists(self):
        return [self.positive, self.cond2, self.negative]

    def denoise(self, x, sigma):
        c1, c2, neg = self.predict(x, sigma, [self.positive, self.cond2, self.negative or self.cond2])
        self.uncond_denoised = neg
        if self.style == "nested":
            inner = c2 + (c1 - c2) * self.cfg
            return neg + (inner - neg) * self.cfg2
        return neg + (c2 - neg) * self.cfg2 + (c1 - c2) * self.cfg


class _PackDenoiser:
    """What the sampler calls when a guider subclass overrides predict_noise: its predictions, with the inner
    Guidance still answering the sampler's other questions (inpaint source, schedule, uncond prediction)."""

    def __init__(self, guider: "Guider", guidance: Guidance, seed: Optional[int]) -> None:
        self.guider, self.guidance, self.seed = guider, guidance, seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.guidance, name)

    @property
    def sample_sigmas(self) -> Optional[torch.Tensor]:
        return self.guidance.sample_sigmas

    @sample_sigmas.setter
    def sample_sigmas(self, sigmas: Optional[torch.Tensor]) -> None:
        self.guidance.sample_sigmas = sigmas

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.guider.predict_noise(x, sigma, self.guider.model_options, self.seed)


class Guider:
    """GUIDER with ComfyUI's CFGGuider interface (see the module docstring). `second`/`cfg2`/`style` make it the
    DualCFGGuider."""

    def __init__(self, model_patcher: Any, positive: Any = None, negative: Any = None, cfg: float = 1.0,
                 second: Any = None, cfg2: float = 1.0, style: str = "regular") -> None:
        self.model_patcher = model_patcher
        self.model = model_patcher  # our name for it
        self.model_options = getattr(model_patcher, "model_options", {})
        self.original_conds: Dict[str, Any] = {}
        self.conds: Dict[str, Any] = {}
        self.cfg = cfg
        self.second, self.cfg2, self.style = second, cfg2, style
        self.inner_model = getattr(model_patcher, "model", None)
        self._guidance: Optional[Guidance] = None
        if positive is not None:
            self.set_conds(positive, negative)

    # ComfyUI's interface
    def set_conds(self, positive: Any, negative: Any = None) -> None:
        self.inner_set_conds({"positive": positive, "negative": negative})

    def inner_set_conds(self, conds: Dict[str, Any]) -> None:
        self.original_conds = {k: v for k, v in conds.items() if v is not None}
        self.conds = dict(self.original_conds)

    def set_cfg(self, cfg: float) -> None:
        self.cfg = cfg

    @property
    def positive(self) -> Any:
        return self.conds.get("positive")

    @property
    def negative(self) -> Any:
        return self.conds.get("negative")

    def guidance(self, shape: Any, seed: Optional[int] = None) -> Guidance:
        model = self.model_patcher
        prep = lambda c: prepare_conditioning(c, shape, model, seed) if c is not None else None  # noqa: E731
        if self.second is None:
            return Guidance(model, prep(self.positive) or [], prep(self.negative), self.cfg,
                            getattr(model, "options", {}).get("cfg_combine"))
        return DualGuidance(model, prep(self.positive), prep(self.second), prep(self.negative), self.cfg,
                            self.cfg2, self.style)

    def predict_noise(self, x: torch.Tensor, timestep: torch.Tensor, model_options: Optional[dict] = None,
                      seed: Optional[int] = None) -> torch.Tensor:
        """The guided denoised prediction at sigma `timestep` (ComfyUI's name; it returns x0, not noise)."""
        if self._guidance is None:
            self._guidance = self.guidance(x.shape)
        self._guidance.cfg = self.cfg  # subclasses schedule the scale step by step (set before calling us)
        return self._guidance.denoise(x, timestep)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options: Optional[dict] = None,
                 seed: Optional[int] = None) -> torch.Tensor:
        return self.predict_noise(x, sigma, model_options, seed)

    def sample(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: SamplerChoice,
               sigmas: torch.Tensor, denoise_mask: Optional[torch.Tensor] = None, callback: Optional[Callable] = None,
               disable_pbar: bool = False, seed: Optional[int] = None) -> torch.Tensor:
        """Raw samples; `callback(step, x0, x, total_steps)` per step, as ComfyUI calls it."""
        def step_callback(step, total, x, denoised):
            callback(step, denoised, x, total)
        samples, _ = self.sample_both(noise, latent_image, sampler, sigmas, denoise_mask,
                                      step_callback if callback is not None else None, seed)
        return samples

    def sample_both(self, noise: torch.Tensor, latent_image: torch.Tensor, sampler: SamplerChoice,
                    sigmas: torch.Tensor, denoise_mask: Optional[torch.Tensor], callback: Optional[Callable],
                    seed: Optional[int]) -> tuple:
        """(samples, last denoised); `callback(step, total, x, denoised)` (our progress callbacks)."""
        guidance = self._guidance = self.guidance(latent_image.shape, seed)
        denoiser: Any = guidance
        if type(self).predict_noise is not Guider.predict_noise:
            denoiser = _PackDenoiser(self, guidance, seed)
        try:
            return run_sampler(self.model_patcher, denoiser, sampler, sigmas, latent_image, noise,
                               0 if seed is None else seed, denoise_mask, callback)
        finally:
            self._guidance = None
