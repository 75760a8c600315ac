"""`comfy.samplers` for node packs: the sampler and scheduler lists, KSampler, KSAMPLER, CFGGuider and the sampling
function, all over our samplers (diffusion/sampling) and guiders (nodes/sampling_objects.py).

Conditioning handed to `sampling_function` / `calc_cond_batch` is CONDITIONING as nodes pass it (lists of
[tensor, options]); it is prepared for the latent's shape on each call.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch

from comfy.k_diffusion import sampling as k_diffusion_sampling  # noqa: F401 - packs import it from here
from diffusion.sampling.guidance import CondEntry, Guidance, prepare_conditioning
from diffusion.sampling.ksampler import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, InpaintWrapper, SamplerChoice, slice_sigmas
from diffusion.sampling.ksampler import calculate_sigmas as _calculate
from diffusion.sampling.registry import SAMPLERS, SCHEDULERS, get_scheduler
from diffusion.sampling.schedulers import sigmas_for_denoise
from nodes.sampling_objects import CustomSampler, Guider

KSAMPLER_NAMES = [n for n in SAMPLERS if n not in ("ddim", "uni_pc", "uni_pc_bh2")]
SAMPLER_NAMES = list(SAMPLERS)
SCHEDULER_NAMES = list(SCHEDULERS)
SCHEDULER_HANDLERS = dict(SCHEDULERS)

Sampler = SamplerChoice  # the SAMPLER objects (a pack's `isinstance(x, Sampler)` and subclasses)
CFGGuider = Guider


class KSAMPLER(CustomSampler):
    """KSAMPLER(sampler_function, extra_options={}, inpaint_options={}): a SAMPLER around a k-diffusion-style
    function `fn(model, x, sigmas, extra_args=None, callback=None, disable=None, **extra_options)`."""


def ksampler(sampler_name: str, extra_options: Optional[dict] = None,
             inpaint_options: Optional[dict] = None) -> SamplerChoice:
    """The SAMPLER for one of our samplers by name, with options (eta, s_noise, ...)."""
    if sampler_name not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler_name!r}")
    return SamplerChoice(sampler_name, dict(extra_options or {}))


def sampler_object(name: str) -> SamplerChoice:
    return ksampler(name)


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """The `steps`-step schedule of `scheduler_name` for a model's sampling object (ComfyUI's argument order)."""
    if scheduler_name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler_name!r}")
    return sigmas_for_denoise(get_scheduler(scheduler_name), model_sampling, steps, 1.0).float()


def _owner(model: Any) -> Any:
    """Our MODEL for a ModelPatcher (itself) or a BaseModel view."""
    return getattr(model, "_owner", model)


def _prepared(conds: Any, shape: Any, model: Any) -> Optional[list]:
    """Entries for the Guidance: CONDITIONING prepared for `shape`; already prepared entries (the `cond` a
    post-cfg function is given) as they are."""
    if conds is None:
        return None
    conds = list(conds)
    if conds and all(isinstance(c, CondEntry) for c in conds):
        return conds
    return prepare_conditioning(conds, shape, model)


def calc_cond_batch(model: Any, conds: List[Any], x_in: torch.Tensor, timestep: torch.Tensor,
                    model_options: Optional[dict] = None) -> List[torch.Tensor]:
    """The denoised prediction of each CONDITIONING in `conds` (zeros for None), batched as the sampler does."""
    owner = _owner(model)
    lists = [_prepared(c, x_in.shape, owner) for c in conds]
    guidance = Guidance(owner, [], None, 1.0)
    guidance.options_override = model_options
    present = [c for c in lists if c is not None]
    preds = iter(guidance.predict(x_in, timestep, present)) if present else iter(())
    return [next(preds) if c is not None else torch.zeros_like(x_in) for c in lists]


def sampling_function(model: Any, x: torch.Tensor, timestep: torch.Tensor, uncond: Any, cond: Any,
                      cond_scale: float, model_options: Optional[dict] = None, seed: Optional[int] = None) -> Any:
    """One guided denoised prediction (CFG and the model's cfg hooks) for CONDITIONING `cond` / `uncond`."""
    owner = _owner(model)
    guidance = Guidance(owner, _prepared(cond, x.shape, owner) or [], _prepared(uncond, x.shape, owner),
                        cond_scale, getattr(owner, "options", {}).get("cfg_combine"))
    return guidance.denoise(x, timestep)


def cfg_function(model: Any, cond_pred: torch.Tensor, uncond_pred: torch.Tensor, cond_scale: float,
                 x: torch.Tensor, timestep: torch.Tensor, model_options: Optional[dict] = None, cond: Any = None,
                 uncond: Any = None) -> torch.Tensor:
    """CFG of two predictions, through the model's cfg and post-cfg functions when it has them."""
    owner = _owner(model)
    guidance = Guidance(owner, [], None, cond_scale)
    options = dict(model_options if model_options is not None else getattr(owner, "model_options", {}))
    return guidance._hooked_cfg(x, timestep, [cond_pred, uncond_pred], options)


class KSampler:
    """ComfyUI's KSampler class: `KSampler(model, steps, device, sampler, scheduler, denoise)` then `sample(...)`."""
    SAMPLERS = SAMPLER_NAMES
    SCHEDULERS = SCHEDULER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = DISCARD_PENULTIMATE_SIGMA_SAMPLERS

    def __init__(self, model: Any, steps: int, device: Any = None, sampler: Optional[str] = None,
                 scheduler: Optional[str] = None, denoise: Optional[float] = None,
                 model_options: Optional[dict] = None) -> None:
        self.model = model
        self.device = device
        self.sampler = sampler if sampler in SAMPLERS else SAMPLER_NAMES[0]
        self.scheduler = scheduler if scheduler in SCHEDULERS else SCHEDULER_NAMES[0]
        self.denoise = 1.0 if denoise is None else float(denoise)
        self.model_options = model_options if model_options is not None else getattr(model, "model_options", {})
        self.set_steps(steps, denoise)

    def calculate_sigmas(self, steps: int) -> torch.Tensor:
        return _calculate(self.model, self.scheduler, steps, 1.0, self.sampler)

    def set_steps(self, steps: int, denoise: Optional[float] = None) -> None:
        self.steps = steps
        self.sigmas = _calculate(self.model, self.scheduler, steps, 1.0 if denoise is None else float(denoise),
                                 self.sampler)

    def sample(self, noise: torch.Tensor, positive: Any, negative: Any, cfg: float, latent_image: Any = None,
               start_step: Optional[int] = None, last_step: Optional[int] = None, force_full_denoise: bool = False,
               denoise_mask: Optional[torch.Tensor] = None, sigmas: Optional[torch.Tensor] = None,
               callback: Optional[Callable] = None, disable_pbar: bool = False,
               seed: Optional[int] = None) -> torch.Tensor:
        sigmas = self.sigmas if sigmas is None else sigmas
        sigmas = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
        guider = Guider(self.model, positive, negative, cfg)
        return guider.sample(noise, latent_image, ksampler(self.sampler), sigmas, denoise_mask, callback,
                             disable_pbar, seed)


def sample(model: Any, noise: torch.Tensor, positive: Any, negative: Any, cfg: float, device: Any,
           sampler: SamplerChoice, sigmas: torch.Tensor, model_options: Optional[dict] = None,
           latent_image: Optional[torch.Tensor] = None, denoise_mask: Optional[torch.Tensor] = None,
           callback: Optional[Callable] = None, disable_pbar: bool = False, seed: Optional[int] = None) -> Any:
    """comfy.samplers.sample: CFG sampling with a SAMPLER object and a schedule."""
    return Guider(model, positive, negative, cfg).sample(noise, latent_image, sampler, sigmas, denoise_mask,
                                                         callback, disable_pbar, seed)


class KSamplerX0Inpaint:
    """ComfyUI's inpainting wrapper around a guided denoiser (a GUIDER): built with `(guider, sigmas)`, given
    `.noise` and `.latent_image`, called as `(x, sigma, denoise_mask, model_options, seed)`. Where the mask is 0 the
    latent stays pinned to the original (renoised to sigma), as KSampler's own inpainting does."""

    def __init__(self, model: Any, sigmas: torch.Tensor) -> None:
        self.inner_model = model
        self.sigmas = sigmas
        self.noise: Optional[torch.Tensor] = None
        self.latent_image: Optional[torch.Tensor] = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, denoise_mask: Optional[torch.Tensor],
                 model_options: Optional[dict] = None, seed: Optional[int] = None) -> torch.Tensor:
        options = model_options if model_options is not None else {}

        def denoise(x_in: torch.Tensor, sigma_in: torch.Tensor, **_: Any) -> torch.Tensor:
            return self.inner_model(x_in, sigma_in, model_options=options, seed=seed)
        if denoise_mask is None:
            return denoise(x, sigma)
        base = getattr(self.inner_model, "inner_model", None) or self.inner_model
        pinned = InpaintWrapper(denoise, self.latent_image, self.noise, denoise_mask, base.model_sampling,
                                options.get("denoise_mask_function"), model=self.inner_model, sigmas=self.sigmas)
        return pinned(x, sigma)
