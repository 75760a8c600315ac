"""Sampling: noise schedules, the discrete SD model sampling, and samplers as small pure functions.

Every sampler has the k-diffusion signature

    sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options) -> x

where `model(x, sigma_batch, **extra_args)` returns the denoised estimate x0 for the noisy `x` at noise level sigma
(a [B] tensor), `sigmas` is the decreasing schedule ending at 0, and `callback({"x", "i", "sigma", "sigma_hat",
"denoised"})` is called once per step (progress, previews, interrupt). Ancestral and SDE samplers draw per-step noise
from `noise_sampler(sigma, sigma_next)`; when it is None they build one from `extra_args["seed"]` (see noise.py).
CFG++ samplers read the unconditional prediction of the last call from `model.uncond_denoised` (the guider sets
it; it is None without CFG, and they then use the plain denoised value).

`SAMPLERS` maps every sampler name of docs/architecture.md §7 to its function and `SCHEDULERS` every scheduler name to a
function `(model_sampling, steps) -> sigmas`; both tables are built once, in registry.py.
"""
from diffusion.sampling.registry import (SAMPLERS, SCHEDULERS, get_sampler, get_scheduler, sampler_names,
                                         scheduler_names)

__all__ = ["SAMPLERS", "SCHEDULERS", "get_sampler", "get_scheduler", "sampler_names", "scheduler_names"]
