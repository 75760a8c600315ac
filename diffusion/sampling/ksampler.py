"""Running a sampler on a MODEL: initial noise from the seed, the sigma schedule, noise scaling, inpainting masks,
latent scaling, and per-step callbacks. The KSampler nodes and the custom-sampling nodes all end up here.

Seeds (docs/architecture.md §7): one CPU float32 `torch.randn` of the whole latent shape from a generator seeded with the
seed; with `batch_index`, one [1, C, H, W] draw per index 0..max in order, picking the indices asked for -- so the
image for batch index i is the same whatever the batch size. Per-step noise comes from the sampler's noise sampler,
itself seeded from the seed, so a seed fully determines the image.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from diffusion.sampling.guidance import Guidance, prepare_conditioning
from diffusion.sampling.registry import get_sampler, get_scheduler


@dataclass
class SamplerChoice:
    """SAMPLER: a sampler function by name, with options (eta, s_noise, ...)."""
    name: str
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def function(self) -> Callable:
        return get_sampler(self.name)


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Optional[List[int]] = None) -> torch.Tensor:
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed) & 0xFFFFFFFFFFFFFFFF)
    shape = tuple(latent.shape)
    if batch_index is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32, device="cpu")
    draws = {}
    for index in range(max(batch_index) + 1):
        draws[index] = torch.randn((1,) + shape[1:], generator=generator, dtype=torch.float32, device="cpu")
    return torch.cat([draws[i] for i in batch_index])


# The samplers for which the KSampler nodes build the schedule one step longer and drop its second-to-last sigma
# (the reference's rule: these solvers take a midpoint or corrector step, which the last tiny interval spoils).
DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def calculate_sigmas(model: Any, scheduler: str, steps: int, denoise: float = 1.0,
                     sampler: Optional[str] = None) -> torch.Tensor:
    """The schedule of `scheduler` for `steps` steps; denoise d < 1 keeps the last steps+1 sigmas of int(steps/d).
    With the KSampler's `sampler` name, the samplers in DISCARD_PENULTIMATE_SIGMA_SAMPLERS get their schedule
    built for one more step with the second-to-last sigma removed (BasicScheduler passes no sampler)."""
    from diffusion.sampling.schedulers import sigmas_for_denoise
    schedule = get_scheduler(scheduler)
    if sampler in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
        plain = schedule

        def schedule(model_sampling: Any, n: int) -> torch.Tensor:
            longer = plain(model_sampling, n + 1)
            return torch.cat([longer[:-2], longer[-1:]])
    return sigmas_for_denoise(schedule, model.model_sampling, steps, denoise).float()


def slice_sigmas(sigmas: torch.Tensor, start_step: Optional[int], last_step: Optional[int],
                 force_full_denoise: bool) -> torch.Tensor:
    """KSamplerAdvanced's start/end steps: run part of a schedule (leftover noise kept unless forced to 0).

    Steps are the gaps between sigmas: steps start..last-1 use sigmas[start..last]. Stopping early ends on the
    sigma reached (or on 0 with `force_full_denoise`); starting at or past the last step leaves nothing to run."""
    steps = len(sigmas) - 1
    stops_early = last_step is not None and last_step < steps
    end = last_step if stops_early else steps
    begin = 0 if start_step is None else start_step
    if start_step is not None and begin >= end:
        return sigmas[:0]
    kept = sigmas[begin:end + 1].clone()
    if stops_early and force_full_denoise:
        kept[-1] = 0
    return kept


class InpaintWrapper:
    """Keeps the unmasked part of the latent pinned to the (renoised) original at every model call.

    `mask_function(sigma, mask, extra_options={"model", "sigmas"}) -> mask`, when given (a MODEL's
    `denoise_mask_function`, e.g. differential diffusion), picks the mask used at each call."""

    def __init__(self, inner: Callable, latent: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor,
                 sampling: Any, mask_function: Optional[Callable] = None, model: Any = None,
                 sigmas: Optional[torch.Tensor] = None) -> None:
        self.inner, self.latent, self.noise, self.mask, self.sampling = inner, latent, noise, mask, sampling
        self.base_mask, self.mask_function, self.model, self.sigmas = mask, mask_function, model, sigmas

    @property
    def uncond_denoised(self):
        """The unconditional prediction (CFG++ samplers) with the same pinning as the guided one."""
        uncond = getattr(self.inner, "uncond_denoised", None)
        return None if uncond is None else uncond * self.mask + self.latent * (1.0 - self.mask)

    def pin(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x with its unmasked part set to the original renoised to `sigma` (the original itself at 0): applied to
        the sampler's result too, since some samplers (dpm_fast, dpm_adaptive) finish between model calls."""
        renoised = self.sampling.noise_scaling(sigma.reshape(-1, 1, 1, 1), self.noise, self.latent, False)
        return x * self.mask + renoised * (1.0 - self.mask)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if self.mask_function is not None:
            self.mask = self.mask_function(sigma, self.base_mask,
                                           extra_options={"model": self.model, "sigmas": self.sigmas})
        out = self.inner(self.pin(x, sigma), sigma, **kwargs)
        return out * self.mask + self.latent * (1.0 - self.mask)


def _noise_mask(mask: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    mask = torch.nn.functional.interpolate(mask, size=latent.shape[2:], mode="bilinear", align_corners=False)
    if mask.shape[0] < latent.shape[0]:
        mask = mask.repeat(math.ceil(latent.shape[0] / mask.shape[0]), 1, 1, 1)[:latent.shape[0]]
    return mask.expand(-1, latent.shape[1], -1, -1)


def run_sampler(model: Any, guidance: Guidance, sampler: SamplerChoice, sigmas: torch.Tensor,
                latent: torch.Tensor, noise: torch.Tensor, seed: int, noise_mask: Optional[torch.Tensor] = None,
                callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None) -> tuple:
    """Sample: returns (samples, denoised of the last step), both raw (unscaled) latents. A MODEL with OUTER_SAMPLE
    wrappers (`run_outer_sample`, model_management/outer_sample.py) runs the whole sampling through them."""
    if len(sigmas) < 2:
        return latent, latent

    def inner(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, latent_shapes=None):
        return _sample(model, guidance, sampler, sigmas, latent_image, noise, seed, denoise_mask, callback)

    prepare = getattr(model, "prepare_sampling", None)
    if prepare is not None:
        prepare(guidance, tuple(noise.shape))
    outer = getattr(model, "run_outer_sample", None)
    if outer is None:
        return inner(noise, latent, sampler, sigmas, noise_mask, callback, False, seed)
    return outer(guidance, inner, noise, latent, sampler, sigmas, noise_mask, callback, False, seed)


def _sample(model: Any, guidance: Guidance, sampler: SamplerChoice, sigmas: torch.Tensor, latent: torch.Tensor,
            noise: torch.Tensor, seed: int, noise_mask: Optional[torch.Tensor],
            callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]]) -> tuple:
    sampling = model.model_sampling
    latent_format = model.latent_format
    latent_in = latent_format.process_in(latent.float())
    sigma0 = float(sigmas[0])
    max_denoise = math.isclose(sampling.sigma_max, sigma0, rel_tol=1e-5) or sigma0 > sampling.sigma_max
    x = sampling.noise_scaling(sigmas[0], noise.float(), latent_in, max_denoise)
    denoiser: Callable = guidance
    mask = _noise_mask(noise_mask, latent_in) if noise_mask is not None else None
    if hasattr(guidance, "set_inpaint_source"):  # inpainting UNets see the mask and the input latent
        guidance.set_inpaint_source(latent_in, mask)
    model_options = getattr(model, "model_options", None) or {}
    if hasattr(guidance, "sample_sigmas"):
        guidance.sample_sigmas = sigmas
    if mask is not None:
        denoiser = InpaintWrapper(guidance, latent_in, noise.float(), mask, sampling,
                                  model_options.get("denoise_mask_function"), getattr(model, "model", model), sigmas)
    last = {"denoised": None}
    total = len(sigmas) - 1

    def on_step(info: dict) -> None:
        last["denoised"] = info["denoised"]
        if callback is not None:
            callback(info["i"], total, info["x"], info["denoised"])

    patched = model.patched() if hasattr(model, "patched") else contextlib.nullcontext()
    controls = guidance.controls_running() if hasattr(guidance, "controls_running") else contextlib.nullcontext()
    with torch.inference_mode(), _run_callbacks(model), patched, controls:
        samples = sampler.function(denoiser, x, sigmas, extra_args={"seed": seed}, callback=on_step,
                                   **sampler.options)
        if isinstance(denoiser, InpaintWrapper):
            samples = denoiser.pin(samples, sigmas[-1])
        samples = sampling.inverse_noise_scaling(sigmas[-1], samples)
    denoised = last["denoised"] if last["denoised"] is not None else samples
    return latent_format.process_out(samples), latent_format.process_out(denoised)


@contextlib.contextmanager
def _run_callbacks(model: Any):
    """A MODEL's on_pre_run callbacks before sampling and on_cleanup ones after (errors included)."""
    get = getattr(model, "get_callbacks", None)
    if get is None:
        yield
        return
    for callback in get("on_pre_run"):
        callback(model)
    try:
        yield
    finally:
        for callback in get("on_cleanup"):
            callback(model)


def sample(model: Any, noise: torch.Tensor, positive: list, negative: Optional[list], cfg: float,
           sampler: SamplerChoice, sigmas: torch.Tensor, latent: torch.Tensor, seed: int,
           noise_mask: Optional[torch.Tensor] = None, callback: Optional[Callable] = None) -> tuple:
    guidance = Guidance(model, prepare_conditioning(positive, latent.shape, model, seed),
                        prepare_conditioning(negative, latent.shape, model, seed) if negative is not None else None,
                        cfg, model.options.get("cfg_combine"))
    return run_sampler(model, guidance, sampler, sigmas, latent, noise, seed, noise_mask, callback)
