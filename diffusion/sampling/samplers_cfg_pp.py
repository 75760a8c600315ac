"""CFG++ variants of the Euler-ancestral, DPM-Solver++ and RES samplers, ancestral RES, and gradient estimation.

CFG++ (Chung et al. 2024, *CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models*) keeps the
guided data prediction D = D_cfg as the clean estimate of a step but renoises along the *unconditional* noise
direction: the DDIM step becomes x' = D + σ'·(x − U)/σ with U = `model.uncond_denoised` (set by the guider after
every call; None without CFG).  Because every solver here is affine in its data predictions, that rule extends to
the higher-order solvers uniformly:

    CFG++ step = (the plain solver's step computed with the unconditional predictions U everywhere) + (D − U)

where D − U is the guidance of the last evaluation used by the step.  For the first-order step this is exactly the
CFG++ DDIM update above (x + (σ' − σ)(x − U)/σ + D − U = D + σ'(x − U)/σ); the multistep corrections extrapolate the
unconditional trajectory.  The correction is only added when the model reports an unconditional prediction, so
without CFG each sampler performs exactly (bit for bit) the arithmetic of its plain counterpart.  This uniform rule
is our reading of the name for the higher-order variants (the CFG++ paper spells out DDIM and Euler-type updates).

Gradient estimation is Permenter & Yuan 2024 (*Interpreting and Improving Diffusion Models from an Optimization
Perspective*, Alg. 2): Euler in σ whose direction is extrapolated from the previous one, d̄ = γ·ε_i + (1 − γ)·ε_{i−1}
with ε = (x − D)/σ and γ = 2 (first step plain Euler).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from diffusion.sampling.noise import ancestral_noise_sampler
from diffusion.sampling.samplers_basic import get_ancestral_step, to_d
from diffusion.sampling.samplers_dpmpp import ancestral_split, phi
from diffusion.sampling.step_loop import StepLoop, denoise, report


def _evaluate(model, x: torch.Tensor, sigma: float, extra_args: dict):
    """(D, U): the model's (guided) prediction and its unconditional one, U is None when the model has none."""
    denoised = denoise(model, x, sigma, extra_args)
    return denoised, getattr(model, "uncond_denoised", None)


def _with_guidance(x_next: torch.Tensor, denoised: torch.Tensor, uncond: Optional[torch.Tensor]) -> torch.Tensor:
    """Add the CFG++ guidance term D − U to a step taken with U (no-op without an unconditional prediction)."""
    return x_next if uncond is None else x_next + (denoised - uncond)


# ---------------------------------------------------------------------------------------------------------------------
# Euler ancestral / DPM-Solver++ CFG++

@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                  noise_sampler=None, eta=1.0, s_noise=1.0):
    """Ancestral Euler with CFG++: x ← D + σ_down·(x − U)/σ, then fresh noise σ_up·s_noise·z (the split of
    `get_ancestral_step`, the noise stream of `euler_ancestral`)."""
    extra_args = {} if extra_args is None else extra_args
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised, uncond = _evaluate(model, x, sigma, extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        report(callback, x, i, sigmas[i], denoised)
        direction = denoised if uncond is None else uncond
        x = _with_guidance(x + to_d(x, sigma, direction) * (sigma_down - sigma), denoised, uncond)
        if sigma_next > 0 and sigma_up > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M) with CFG++: the 2M step (Lu et al. 2022b, Alg. 2) on the unconditional predictions,
    x' = (σ'/σ)·x − (e^{−h} − 1)·Ū with Ū = (1 + 1/(2r))·U_i − 1/(2r)·U_{i−1}, plus D_i − U_i; equivalently
    x' = D_i + (σ'/σ)(x − U_i) + (1 − σ'/σ)·(U_i − U_{i−1})/(2r).  A step to σ = 0 returns D_i."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback, evaluate=_evaluate)
    old, h_last = None, None
    for i, sigma, sigma_next, (denoised, uncond) in loop.steps(lambda: x):
        current = denoised if uncond is None else uncond
        h = math.log(sigma / sigma_next)
        estimate = current
        if old is not None:
            r = h_last / h
            estimate = (1.0 + 1.0 / (2.0 * r)) * current - (1.0 / (2.0 * r)) * old
        x = _with_guidance((sigma_next / sigma) * x - math.expm1(-h) * estimate, denoised, uncond)
        old, h_last = current, h
    return loop.result(x)


def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                     noise_sampler=None, eta: float = 1.0, s_noise: float = 1.0):
    """DPM-Solver++(2S) ancestral with CFG++: the midpoint u = D + (σ_m/σ)(x − U) (a CFG++ DDIM step to
    σ_m = sqrt(σ·σ_down)), then x ← D(u) + (σ_down/σ)(x − U(u)) and fresh noise σ_up·s_noise·z as in
    `dpmpp_2s_ancestral`.  A step to σ_down = 0 returns D."""
    extra_args = extra_args or {}
    noise_sampler = ancestral_noise_sampler(x, extra_args, noise_sampler)
    loop = StepLoop(model, sigmas, extra_args, callback, evaluate=_evaluate, end_on_zero=False, skip_repeated=False)
    for i, sigma, sigma_next, (denoised, uncond) in loop.steps(lambda: x):
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down <= 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_down)
            sigma_mid = math.sqrt(sigma * sigma_down)
            current = denoised if uncond is None else uncond
            x_mid = _with_guidance((sigma_mid / sigma) * x - math.expm1(-0.5 * h) * current, denoised, uncond)
            denoised_mid, uncond_mid = _evaluate(model, x_mid, sigma_mid, extra_args)
            current_mid = denoised_mid if uncond_mid is None else uncond_mid
            x = _with_guidance((sigma_down / sigma) * x - math.expm1(-h) * current_mid, denoised_mid, uncond_mid)
        if sigma_next > 0.0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            if sigma_up > 0.0:
                x = x + noise * (s_noise * sigma_up)
    return loop.result(x)


# ---------------------------------------------------------------------------------------------------------------------
# RES multistep: CFG++ and ancestral variants

def _res_step(x: torch.Tensor, sigma: float, sigma_to: float, current: torch.Tensor,
              previous: Optional[torch.Tensor], h_last: Optional[float]) -> torch.Tensor:
    """One RES multistep step σ → σ_to > 0 (the rule of `res_multistep`): with h = log(σ/σ_to),
    x' = e^{−h}·x + h·φ1(−h)·D_i + h²·φ2(−h)·(D_i − D_{i−1})/h_last.

    h_last is the λ-length of the previous *deterministic* step (to its σ_down), not the λ-gap log(σ_{i−1}/σ_i)
    between the two evaluations: an ancestral step travels λ-time h along the probability-flow ODE but the noise
    level only drops by the (smaller) gap, so the change D_i − D_{i−1} is spread over the ODE time actually
    travelled.  With η = 1 this makes the ancestral step coincide with the second-order exponential integrator
    of the reverse SDE (dpmpp_2m_sde, solver_type "heun", η = 1), which the tests check; the gap instead would double
    the correction and leave the samples visibly too wide at 10–30 steps."""
    h = math.log(sigma / sigma_to)
    x_next = math.exp(-h) * x + (h * phi(1, -h)) * current
    if previous is not None:
        x_next = x_next + (h * h * phi(2, -h) / h_last) * (current - previous)
    return x_next


def _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, eta: float, s_noise: float):
    """RES multistep with ancestral noise (eta > 0) and CFG++ when the model reports `uncond_denoised`."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback, evaluate=_evaluate)
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler) if eta > 0.0 else None
    old, h_last = None, None
    for i, sigma, sigma_next, (denoised, uncond) in loop.steps(lambda: x):
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        current = denoised if uncond is None else uncond
        if sigma_down <= 0.0:               # (only for eta > 1) all of σ' is fresh noise
            x, old = denoised, None
        else:
            x = _with_guidance(_res_step(x, sigma, sigma_down, current, old, h_last), denoised, uncond)
            old, h_last = current, math.log(sigma / sigma_down)
        if noise is not None and sigma_up > 0.0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * (s_noise * sigma_up)
    return loop.result(x)


def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                noise_sampler=None):
    """RES multistep (see `res_multistep`) with CFG++: the step on the unconditional predictions plus D_i − U_i,
    i.e. x' = D_i + e^{−h}(x − U_i) + h²·φ2(−h)·(U_i − U_{i−1})/h_{i−1}.  A step to σ = 0 returns D_i."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, 0.0, 1.0)


def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                   noise_sampler=None, eta: float = 1.0, s_noise: float = 1.0):
    """Ancestral RES multistep: each step σ → σ' is a RES step to σ_down followed by fresh noise σ_up·s_noise·z
    (`ancestral_split`: σ_down² + σ_up² = σ'²); the multistep correction divides by the previous deterministic
    step's λ-length (see `_res_step`).  η = 0 is `res_multistep`.  Does not apply CFG++ (see res_multistep_ancestral_cfg_pp)."""
    plain = _PlainView(model)
    return _res_multistep(plain, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                          noise_sampler=None, eta: float = 1.0, s_noise: float = 1.0):
    """Ancestral RES multistep with CFG++: the RES step to σ_down on the unconditional predictions plus D_i − U_i,
    then fresh noise σ_up·s_noise·z."""
    return _res_multistep(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise)


class _PlainView:
    """The model seen without its unconditional prediction: the plain (non-CFG++) samplers sharing a CFG++ loop."""

    uncond_denoised = None

    def __init__(self, model):
        self._model = model

    def __call__(self, x, sigma, **kwargs):
        return self._model(x, sigma, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# gradient estimation (Permenter & Yuan 2024)

def _gradient_estimation(model, x, sigmas, extra_args, callback, ge_gamma: float):
    loop = StepLoop(model, sigmas, extra_args, callback, evaluate=_evaluate, end_on_zero=False, skip_repeated=False)
    old_d = None
    for i, sigma, sigma_next, (denoised, uncond) in loop.steps(lambda: x):
        d = to_d(x, sigma, denoised if uncond is None else uncond)
        direction = d if old_d is None else ge_gamma * d + (1.0 - ge_gamma) * old_d
        x = _with_guidance(x + direction * (sigma_next - sigma), denoised, uncond)
        old_d = d
    return x


@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                               ge_gamma: float = 2.0):
    """Gradient estimation (Permenter & Yuan 2024, Alg. 2): x ← x + (σ' − σ)·d̄ with ε_i = (x − D)/σ and
    d̄ = γ·ε_i + (1 − γ)·ε_{i−1} (γ = `ge_gamma` = 2; the first step is Euler, γ = 1 is Euler throughout).
    One model call per step; the step to σ = 0 uses the same rule."""
    return _gradient_estimation(_PlainView(model), x, sigmas, extra_args, callback, ge_gamma)


@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None,
                                      noise_sampler=None, ge_gamma: float = 2.0):
    """Gradient estimation with CFG++: the extrapolated direction is built from the unconditional ε_i = (x − U)/σ
    and the guidance D − U is added: x' = D + σ'·ε_i + (σ' − σ)(γ − 1)(ε_i − ε_{i−1})."""
    return _gradient_estimation(model, x, sigmas, extra_args, callback, ge_gamma)
