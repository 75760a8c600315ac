"""Basic samplers: Euler/Heun family, DPM-Solver (fast, adaptive, DPM2), LMS, DDPM, LCM, DDIM and Euler CFG++.

All follow the interface of diffusion/sampling/__init__.py: `model(x, sigma * s_in, **extra_args)` is a denoiser
(returns x0), `sigmas` decreases to (usually) 0, the probability-flow ODE is dx/dσ = (x − D(x, σ))/σ (Karras et al.
2022, eq. 3 with σ(t) = t), and ancestral samplers draw noise from `noise_sampler(sigma, sigma_next)` or, when it is
None, from the seeded generator of noise.py (`extra_args["seed"]` stays in extra_args and reaches the model).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from diffusion.sampling.noise import ancestral_noise_sampler
from diffusion.sampling.samplers_rf import is_rectified_flow, sample_euler_ancestral_rf


# ---------------------------------------------------------------------------------------------------------------------
# helpers

def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dσ = (x − denoised)/σ (sigma a float or broadcastable tensor)."""
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0):
    """Split a stochastic step σ_from → σ_to into a deterministic step to σ_down followed by fresh noise of std
    σ_up, with σ_down² + σ_up² = σ_to² (the marginal variance is kept).  η = 1 gives the DDPM posterior variance
    σ_up² = σ_to²(σ_from² − σ_to²)/σ_from²; η = 0 the deterministic step.  Returns (sigma_down, sigma_up) floats."""
    sigma_from, sigma_to = float(sigma_from), float(sigma_to)
    if eta == 0.0 or sigma_to == 0.0:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(max(sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2), 0.0)
                                             / sigma_from ** 2))
    sigma_down = math.sqrt(max(sigma_to ** 2 - sigma_up ** 2, 0.0))
    return sigma_down, sigma_up


def _setup(x, extra_args):
    return ({} if extra_args is None else extra_args), x.new_ones([x.shape[0]])


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _churn(x, sigma, i, n_steps, s_churn, s_tmin, s_tmax, s_noise, noise_fn):
    """Karras et al. 2022 Alg. 2 lines 4–6: raise σ to σ̂ = σ(1 + γ) by adding noise (γ = 0 by default)."""
    gamma = min(s_churn / n_steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
    sigma_hat = sigma * (1.0 + gamma)
    if gamma > 0:
        x = x + noise_fn() * s_noise * (sigma_hat ** 2 - sigma ** 2) ** 0.5
    return x, sigma_hat


# ---------------------------------------------------------------------------------------------------------------------
# Euler family

@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 2 without the Heun correction; optional
    churn γ = min(s_churn/N, √2 − 1) inside [s_tmin, s_tmax])."""
    extra_args, s_in = _setup(x, extra_args)
    n = len(sigmas) - 1
    noise = None
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_churn > 0 and noise is None:
            noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
        x, sigma_hat = _churn(x, sigma, i, n, s_churn, s_tmin, s_tmax, s_noise, lambda: noise(sigma, sigma_next))
        denoised = model(x, sigma_hat * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        x = x + to_d(x, sigma_hat, denoised) * (sigma_next - sigma_hat)
    return x


def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Deterministic DDIM (Song et al. 2021, η = 0).  In the VE/σ parameterisation the DDIM update
    x' = D + σ'·(x − D)/σ is exactly an Euler step of the probability-flow ODE, so this is `sample_euler`."""
    return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    """Ancestral Euler: an Euler step to σ_down then fresh noise σ_up·s_noise·z (`get_ancestral_step`; with η = 1
    each step samples the DDPM posterior, Ho et al. 2020, in σ form). Rectified-flow models: samplers_rf.py."""
    if is_rectified_flow(model):
        return sample_euler_ancestral_rf(model, x, sigmas, extra_args, callback, disable, noise_sampler, eta, s_noise)
    extra_args, s_in = _setup(x, extra_args)
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
        if sigma_next > 0 and sigma_up > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Euler CFG++ (Chung et al. 2024, *CFG++: Manifold-constrained Classifier Free Guidance*): denoise with the
    guided prediction but renoise along the unconditional one, x' = D_cfg + σ'·(x − D_uncond)/σ.  Reads
    `model.uncond_denoised` after each call; when it is None (no CFG) the step is plain Euler."""
    extra_args, s_in = _setup(x, extra_args)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        uncond = getattr(model, "uncond_denoised", None)
        if uncond is None:
            uncond = denoised
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised + to_d(x, sigma, uncond) * sigma_next
    return x


# ---------------------------------------------------------------------------------------------------------------------
# Heun family and DPM2

@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """Heun's second-order method (Karras et al. 2022, Alg. 2): Euler predictor, trapezoidal corrector; the last
    step to σ = 0 is a plain Euler step (no model call at σ = 0).  Churn parameters default to 0 (deterministic)."""
    extra_args, s_in = _setup(x, extra_args)
    n = len(sigmas) - 1
    noise = None
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_churn > 0 and noise is None:
            noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
        x, sigma_hat = _churn(x, sigma, i, n, s_churn, s_tmin, s_tmax, s_noise, lambda: noise(sigma, sigma_next))
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        if sigma_next == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigma_next, model(x_2, sigmas[i + 1] * s_in, **extra_args))
        x = x + (d + d_2) * (dt / 2)
    return x


@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """"Heun++" as published with the sd-webui-samplers-scheduler extension (Carzit): from σ̂ the Euler slope d₁
    predicts x at σ_{i+1}; while two more σ lie ahead, a second Euler hop to σ_{i+2} gives d₃ as well. The step
    from σ̂ to σ_{i+1} then uses a weighted slope whose weights grow as σ falls, relative to the first σ:
    w₂ = σ_{i+1}/(3σ₀), w₃ = σ_{i+2}/(3σ₀), w₁ = 1 − w₂ − w₃ (three model calls); with one σ left after σ_{i+1}
    the weights are w₂ = σ_{i+1}/(2σ₀), w₁ = 1 − w₂ (two calls); the step onto the last σ is Euler (one call).
    Churn parameters default to 0 (deterministic)."""
    extra_args, s_in = _setup(x, extra_args)
    n = len(sigmas) - 1
    sigma_first, sigma_last = float(sigmas[0]), float(sigmas[-1])
    noise = None
    for i in range(n):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if s_churn > 0 and noise is None:
            noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
        x, sigma_hat = _churn(x, sigma, i, n, s_churn, s_tmin, s_tmax, s_noise, lambda: noise(sigma, sigma_next))
        denoised = model(x, sigma_hat * s_in, **extra_args)
        slopes = [to_d(x, sigma_hat, denoised)]
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        dt = sigma_next - sigma_hat
        ahead = [float(s) for s in sigmas[i + 1:i + 3]]  # σ_{i+1} and, when there, σ_{i+2}
        if sigma_next == sigma_last:
            ahead = []  # the last step: Euler
        elif float(sigmas[i + 2]) == sigma_last:
            ahead = ahead[:1]
        x_probe, sigma_probe = x, sigma_hat
        for sigma_at in ahead:  # chained Euler hops, each slope measured where it lands
            x_probe = x_probe + slopes[-1] * (sigma_at - sigma_probe)
            sigma_probe = sigma_at
            slopes.append(to_d(x_probe, sigma_at, model(x_probe, sigma_at * s_in, **extra_args)))
        later = [sigma_at / (len(slopes) * sigma_first) for sigma_at in ahead]
        weights = [1.0 - sum(later)] + later
        x = x + sum(w * d for w, d in zip(weights, slopes)) * dt
    return x


def _dpm2_step(model, x, sigma, sigma_to, d, s_in, extra_args):
    """DPM-Solver-2 (Lu et al. 2022) in Karras' σ form: an Euler half step to the log-σ midpoint sqrt(σ·σ_to), then
    the full step with the midpoint's slope.  σ_to = 0 falls back to Euler."""
    if sigma_to == 0:
        return x + d * (sigma_to - sigma)
    sigma_mid = math.exp(0.5 * (math.log(sigma) + math.log(sigma_to)))
    x_mid = x + d * (sigma_mid - sigma)
    d_mid = to_d(x_mid, sigma_mid, model(x_mid, sigma_mid * s_in, **extra_args))
    return x + d_mid * (sigma_to - sigma)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver-2 / midpoint method in log σ (Lu et al. 2022; Karras et al. 2022 §3 "DPM2")."""
    extra_args, s_in = _setup(x, extra_args)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = _dpm2_step(model, x, sigma, sigma_next, to_d(x, sigma, denoised), s_in, extra_args)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                           eta=1.0, s_noise=1.0):
    """Ancestral DPM2: a DPM-Solver-2 step to σ_down, then fresh noise σ_up·s_noise·z (`get_ancestral_step`)."""
    extra_args, s_in = _setup(x, extra_args)
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = _dpm2_step(model, x, sigma, sigma_down, to_d(x, sigma, denoised), s_in, extra_args)
        if sigma_next > 0 and sigma_up > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


# ---------------------------------------------------------------------------------------------------------------------
# linear multistep

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """∫_{t[i]}^{t[i+1]} ℓ_j(τ) dτ where ℓ_j is the Lagrange basis polynomial through the nodes t[i], t[i−1], …,
    t[i−order+1] that is 1 at t[i−j].  The integrand has degree < order ≤ 4, so 8-point Gauss–Legendre is exact."""
    nodes = [float(t[i - k]) for k in range(order)]
    a, b = float(t[i]), float(t[i + 1])
    taus = 0.5 * (b - a) * _GL_NODES + 0.5 * (b + a)
    basis = np.ones_like(taus)
    for k in range(order):
        if k != j:
            basis *= (taus - nodes[k]) / (nodes[j] - nodes[k])
    return float(0.5 * (b - a) * np.dot(_GL_WEIGHTS, basis))


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, order=4):
    """Linear multistep (Adams–Bashforth with variable steps) on dx/dσ: the last `order` derivatives are
    extrapolated with a Lagrange polynomial in σ and integrated over [σ_i, σ_{i+1}]; the order ramps up 1, 2, 3, 4
    over the first steps.  One model call per step (Karras et al. 2022 list it as the "LMS" baseline)."""
    extra_args, s_in = _setup(x, extra_args)
    t = sigmas.detach().to("cpu", torch.float64).numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        sigma = float(sigmas[i])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds.append(to_d(x, sigma, denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        cur = min(i + 1, order)
        coeffs = [lms_coefficient(cur, t, i, j) for j in range(cur)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


# ---------------------------------------------------------------------------------------------------------------------
# DPM-Solver (Lu et al. 2022) in the σ / VE formulation: λ = t = −log σ, ε(x, σ) = (x − D(x, σ))/σ

def _eps(model, x, sigma, s_in, extra_args):
    denoised = model(x, sigma * s_in, **extra_args)
    return (x - denoised) / sigma, denoised


def _dpm_solver_step(model, x, t, t_next, eps, order, s_in, extra_args, r1=None):
    """One DPM-Solver-`order` step (paper Alg. 1 / 2 / Eq. 3.7-style updates with α = 1, σ = e^{−t}) from time t to
    t_next given ε at (x, t).  Returns (x_next, x_lower) where x_lower is the embedded lower-order solution
    (DPM-Solver-1 for order 2, DPM-Solver-2 with r1 = 1/3 for order 3), used for error control."""
    h = t_next - t
    sig = lambda tt: math.exp(-tt)
    expm1_h = math.expm1(h)
    x1 = x - sig(t_next) * expm1_h * eps
    if order == 1:
        return x1, x1
    if order == 2:
        r1 = 0.5 if r1 is None else r1
        s1 = t + r1 * h
        u1 = x - sig(s1) * math.expm1(r1 * h) * eps
        eps_1, _ = _eps(model, u1, sig(s1), s_in, extra_args)
        x2 = x1 - sig(t_next) / (2 * r1) * expm1_h * (eps_1 - eps)
        return x2, x1
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - sig(s1) * math.expm1(r1 * h) * eps
    eps_1, _ = _eps(model, u1, sig(s1), s_in, extra_args)
    d1 = eps_1 - eps
    u2 = (x - sig(s2) * math.expm1(r2 * h) * eps
          - sig(s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * d1)
    eps_2, _ = _eps(model, u2, sig(s2), s_in, extra_args)
    x3 = x1 - sig(t_next) / r2 * (expm1_h / h - 1.0) * (eps_2 - eps)
    x2 = x1 - sig(t_next) / (2 * r1) * expm1_h * d1
    return x3, x2


def _solver_range(sigmas):
    """(σ_start, σ_end) for the DPM-Solver samplers: the first sigma and the smallest positive one (ε-form DPM-Solver
    cannot step to σ = 0, so these samplers stop at the schedule's last positive sigma)."""
    positive = sigmas[sigmas > 0]
    return float(sigmas[0]), float(positive.min())


@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver-fast (Lu et al. 2022, §3.4): a fixed budget of N = len(sigmas) − 1 model calls spent on
    K = ⌊N/3⌋ + 1 steps uniform in log σ between sigmas[0] and the last positive sigma, with orders
    [3]*(K−2) + [2, 1] when N ≡ 0 (mod 3), [3]*(K−1) + [1] when N ≡ 1, [3]*(K−1) + [2] when N ≡ 2.  Only the
    endpoints of `sigmas` are used; the result is at the last positive sigma (≈ clean for SD's σ_min)."""
    extra_args, s_in = _setup(x, extra_args)
    nfe = len(sigmas) - 1
    if nfe <= 0:
        return x
    sigma_start, sigma_end = _solver_range(sigmas)
    k = nfe // 3 + 1
    orders = {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[nfe % 3]
    ts = np.linspace(-math.log(sigma_start), -math.log(sigma_end), len(orders) + 1)
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        eps, denoised = _eps(model, x, math.exp(-t), s_in, extra_args)
        _report(callback, x, i, torch.tensor(math.exp(-t)), torch.tensor(math.exp(-t)), denoised)
        x, _ = _dpm_solver_step(model, x, t, t_next, eps, order, s_in, extra_args)
    return x


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        order=3, rtol=0.05, atol=0.0078, h_init=0.05, safety=0.9, max_growth=2.0, max_steps=1000):
    """DPM-Solver-12 / DPM-Solver-23 with adaptive step size (Lu et al. 2022, §4 and App. C): each step computes an
    order-k and an embedded order-(k−1) solution sharing model calls and the scaled error
    E = RMS((x_k − x_{k−1}) / max(atol, rtol·max(|x_{k−1}|, |x_prev|))), accepts the step when E ≤ 1, and sets the
    next step h ← min(t_end − t, safety·h·E^(−1/k)), with the growth per step capped at `max_growth`.  As in the
    paper the error is measured on the variance-preserving latent x/sqrt(1 + σ²) (the VE latent at σ = 14.6 is ~15×
    larger, which would make rtol meaningless early on).  Integrates in t = −log σ from sigmas[0] to the last positive
    sigma; the number of model calls is adaptive."""
    extra_args, s_in = _setup(x, extra_args)
    if len(sigmas) < 2 or order not in (2, 3):
        return x
    sigma_start, sigma_end = _solver_range(sigmas)
    t, t_end = -math.log(sigma_start), -math.log(sigma_end)
    vp = lambda tt: 1.0 / math.sqrt(1.0 + math.exp(-2.0 * tt))
    h = h_init
    eps = denoised = None
    step = 0
    for _ in range(max_steps):
        if t_end - t <= 1e-5:
            break
        h = min(h, t_end - t)
        if eps is None:
            eps, denoised = _eps(model, x, math.exp(-t), s_in, extra_args)
        x_high, x_low = _dpm_solver_step(model, x, t, t + h, eps, order, s_in, extra_args,
                                         r1=0.5 if order == 2 else None)
        low, high, prev = x_low * vp(t + h), x_high * vp(t + h), x * vp(t)
        tol = torch.clamp(rtol * torch.maximum(low.abs(), prev.abs()), min=atol)
        err = float(((high - low) / tol).pow(2).mean().sqrt())
        if err <= 1.0:
            _report(callback, x, step, torch.tensor(math.exp(-t)), torch.tensor(math.exp(-t)), denoised)
            x, t, eps, step = x_high, t + h, None, step + 1
        h = h * min(max_growth, safety * max(err, 1e-10) ** (-1.0 / order))
    return x


# ---------------------------------------------------------------------------------------------------------------------
# DDPM and LCM

@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, s_noise=1.0):
    """Ancestral DDPM sampling (Ho et al. 2020, eq. 7) on the schedule: map to the VP chain with ᾱ = 1/(1 + σ²),
    sample the posterior q(x_{t'} | x_t, x̂0) with mean (sqrt(ᾱ')β/(1−ᾱ))·x̂0 + (sqrt(α)(1−ᾱ')/(1−ᾱ))·x_t and
    variance β̃ = β(1−ᾱ')/(1−ᾱ) where α = ᾱ/ᾱ', β = 1 − α, and map back (x = x_vp·sqrt(1 + σ'²)).  In σ form this is
    the Gaussian with mean x̂0 + (σ'/σ)²(x − x̂0) and variance σ'²(σ² − σ'²)/σ²."""
    extra_args, s_in = _setup(x, extra_args)
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        ab, ab_next = 1.0 / (1.0 + sigma ** 2), 1.0 / (1.0 + sigma_next ** 2)
        alpha = ab / ab_next
        beta = 1.0 - alpha
        x_vp = x * math.sqrt(ab)
        mean = (math.sqrt(ab_next) * beta / (1.0 - ab)) * denoised + (math.sqrt(alpha) * (1.0 - ab_next)
                                                                        / (1.0 - ab)) * x_vp
        if sigma_next > 0:
            var = beta * (1.0 - ab_next) / (1.0 - ab)
            mean = mean + noise(sigmas[i], sigmas[i + 1]) * (s_noise * math.sqrt(var))
        x = mean / math.sqrt(ab_next)
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Latent consistency sampling (Luo et al. 2023, Alg. 1 multistep): take the model's clean estimate, then re-noise
    it to the next sigma with fresh noise, x = D + σ'·z (the last step returns D)."""
    extra_args, s_in = _setup(x, extra_args)
    noise = ancestral_noise_sampler(x, extra_args, noise_sampler)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = denoised
        if float(sigmas[i + 1]) > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1]
    return x
