"""Ancestral samplers for rectified-flow models (SD3, Flux: ComfyUI's CONST models), which euler_ancestral and
dpmpp_2s_ancestral switch to when the model is one.

On the flow x_σ = (1 − σ)·x0 + σ·n the variance-preserving renoise of the SD samplers does not apply; instead each
step σ → σ' goes deterministically to σ_down = σ'·(1 + (σ'/σ − 1)·η) and is then lifted back onto the flow at σ':
x ← (α'/α_down)·x + c·z, with α = 1 − σ and c² = σ'² − σ_down²·α'²/α_down² (the noise that makes the marginal at
σ' exact). η = 1 steps to σ_down = σ'²/σ; η = 0 is the deterministic sampler. The deterministic parts: an Euler
step along the straight line, x ← (σ_down/σ)·x + (1 − σ_down/σ)·D, and for DPM-Solver++(2S) the same move from a
midpoint σ_s taken halfway in λ = log((1 − σ)/σ). A step to σ = 0 ends on the denoised value (step_loop.py).
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

from diffusion.sampling.noise import ancestral_noise_sampler
from diffusion.sampling.step_loop import StepLoop, denoise


def is_rectified_flow(model) -> bool:
    """Whether a sampler's denoiser (a Guidance, or a wrapper around one) samples a rectified-flow model."""
    for holder in (model, getattr(model, "inner", None)):
        sampling = getattr(holder, "sampling", None)
        if sampling is not None:
            return getattr(sampling, "prediction", None) == "flow"
    return False


def rf_ancestral_step(sigma: float, sigma_next: float, eta: float) -> Tuple[float, float, float]:
    """(σ_down, α'/α_down, renoise coefficient) of a flow ancestral step σ → σ_next."""
    sigma_down = sigma_next * (1.0 + (sigma_next / sigma - 1.0) * eta)
    alpha_next, alpha_down = 1.0 - sigma_next, 1.0 - sigma_down
    renoise = math.sqrt(max(0.0, sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2))
    return sigma_down, alpha_next / alpha_down, renoise


def _line(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_to: float) -> torch.Tensor:
    """The point at σ_to on the straight line through x (at σ) and its denoised estimate."""
    ratio = sigma_to / sigma
    return ratio * x + (1.0 - ratio) * denoised


@torch.no_grad()
def sample_euler_ancestral_rf(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                              eta=1.0, s_noise=1.0):
    extra_args = extra_args or {}
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    loop = StepLoop(model, sigmas, extra_args, callback, skip_repeated=False)
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        sigma_down, lift, renoise = rf_ancestral_step(sigma, sigma_next, eta)
        x = _line(x, denoised, sigma, sigma_down)
        if eta > 0:
            x = lift * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return loop.result(x)


@torch.no_grad()
def sample_dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                                 eta=1.0, s_noise=1.0):
    extra_args = extra_args or {}
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    loop = StepLoop(model, sigmas, extra_args, callback, skip_repeated=False)
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        sigma_down, lift, renoise = rf_ancestral_step(sigma, sigma_next, eta)
        if sigma == 1.0:
            sigma_mid = 0.9999  # λ is infinite at σ = 1
        else:
            lam, lam_down = math.log((1 - sigma) / sigma), math.log((1 - sigma_down) / sigma_down)
            sigma_mid = 1.0 / (math.exp(lam + 0.5 * (lam_down - lam)) + 1.0)
        u = _line(x, denoised, sigma, sigma_mid)
        x = _line(x, denoise(model, u, sigma_mid, extra_args), sigma, sigma_down)
        if eta > 0:
            x = lift * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return loop.result(x)
