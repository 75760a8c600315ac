"""Noise schedules: decreasing float32 sigma sequences, normally of length steps + 1 and ending in 0.

Registered schedulers have the signature `(model_sampling, steps) -> sigmas` (model_sampling a
`DiscreteModelSampling` or anything with `sigmas`, `sigma_min`, `sigma_max`, `sigma(t)` and `timestep(sigma)`).
The standalone helpers (`karras_sigmas`, `exponential_sigmas`, `polyexponential_sigmas`, `beta_sigmas`,
`sd_turbo_sigmas`, `sigmas_for_denoise`) back the custom-sampling nodes.
"""
from __future__ import annotations

import math
from typing import Callable

import torch



def _with_zero(sigmas) -> torch.Tensor:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _empty() -> torch.Tensor:
    return torch.zeros([0], dtype=torch.float32)


def _table(model_sampling) -> torch.Tensor:
    return model_sampling.sigmas.detach().to("cpu", torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# standalone schedules

def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. 2022 (EDM), eq. 5: σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, then 0."""
    if n <= 0:
        return _empty()
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = float(sigma_min) ** (1.0 / rho), float(sigma_max) ** (1.0 / rho)
    return _with_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas uniform in log σ from σ_max to σ_min, then 0."""
    if n <= 0:
        return _empty()
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def polyexponential_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> torch.Tensor:
    """log σ = log σ_min + r^ρ·(log σ_max − log σ_min) with r = linspace(1, 0, n), then 0 (ρ = 1: exponential)."""
    if n <= 0:
        return _empty()
    ramp = torch.linspace(1, 0, n, dtype=torch.float64) ** rho
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return _with_zero((lo + ramp * (hi - lo)).exp())


def _log_beta_fn(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function, evaluated with the modified Lentz algorithm."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 0.0
    f = 1.0
    for j in range(1, 500):
        m = j // 2
        if j % 2 == 1:
            coef = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            coef = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 + coef * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + coef / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return 1.0 / f


def beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta function I_x(a, b) (the Beta(a, b) CDF), float64."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - beta_cdf(1.0 - x, b, a)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - _log_beta_fn(a, b)) / a
    return front * _beta_continued_fraction(x, a, b)


def beta_ppf(q: float, a: float, b: float) -> float:
    """Beta(a, b) quantile: the inverse of `beta_cdf` by bisection (the CDF is monotone), to ~1e-15."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if beta_cdf(mid, a, b) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return 0.5 * (lo + hi)


def beta_sigmas(model_sampling, steps: int, alpha: float = 0.6, beta: float = 0.6) -> torch.Tensor:
    """Lee et al. 2024, *Beta Sampling is All You Need*: timesteps at the Beta(α, β) quantiles of
    q = 1, 1 − 1/steps, …, 1/steps, scaled to the table (t = round(ppf(q)·(T − 1))), table sigmas at them, then 0.
    Consecutive duplicate timesteps (possible for large step counts) are dropped, so the result can be shorter
    than steps + 1."""
    if steps <= 0:
        return _empty()
    table = _table(model_sampling)
    last_t = len(table) - 1
    out, previous = [], None
    for k in range(steps):
        t = int(round(beta_ppf(1.0 - k / steps, alpha, beta) * last_t))
        if t != previous:
            out.append(float(table[t]))
        previous = t
    return _with_zero(out)


def sd_turbo_sigmas(model_sampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """SD-Turbo's schedule: the timesteps 999, 899, …, 99 (t_k = 999 − 100·k, ten in all), starting at
    k0 = 10 − int(10·denoise) and taking `steps` of them (fewer when that runs past t = 99); table sigmas, then 0."""
    start = 10 - int(10 * float(denoise))
    ks = [k for k in range(start, start + int(steps)) if 0 <= k < 10]
    if not ks:
        return _empty()
    timesteps = torch.tensor([999.0 - 100.0 * k for k in ks])
    return _with_zero(model_sampling.sigma(timesteps).to("cpu"))


def sigmas_for_denoise(scheduler_fn: Callable, model_sampling, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """docs/architecture.md §7 denoise rule: for d < 1, build the schedule for int(steps/d) steps and keep its last steps + 1
    sigmas; d ≤ 0 gives an empty schedule; d ≥ 1 (or None) the plain schedule."""
    if denoise is None or denoise >= 1.0:
        return scheduler_fn(model_sampling, steps)
    if denoise <= 0.0 or steps <= 0:
        return _empty()
    total = int(steps / denoise)
    return scheduler_fn(model_sampling, total)[-(steps + 1):]


# ---------------------------------------------------------------------------------------------------------------------
# registered schedulers

def normal_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """t = linspace(t(σ_max), t(σ_min), steps) (999 … 0 on SD), σ(t) log-linearly interpolated, then 0."""
    if steps <= 0:
        return _empty()
    start = float(model_sampling.timestep(torch.tensor(model_sampling.sigma_max)))
    end = float(model_sampling.timestep(torch.tensor(model_sampling.sigma_min)))
    t = torch.linspace(start, end, steps)
    return _with_zero(model_sampling.sigma(t).to("cpu"))


def sgm_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """As `normal` but t = linspace(999, 0, steps + 1) without its last point (SGM / SDXL-Turbo "trailing" style)."""
    if steps <= 0:
        return _empty()
    start = float(model_sampling.timestep(torch.tensor(model_sampling.sigma_max)))
    end = float(model_sampling.timestep(torch.tensor(model_sampling.sigma_min)))
    t = torch.linspace(start, end, steps + 1)[:-1]
    return _with_zero(model_sampling.sigma(t).to("cpu"))


def karras_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Karras ρ = 7 between the table's σ_min and σ_max."""
    return karras_sigmas(steps, model_sampling.sigma_min, model_sampling.sigma_max, rho=7.0)


def exponential_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Uniform in log σ between the table's σ_max and σ_min."""
    return exponential_sigmas(steps, model_sampling.sigma_min, model_sampling.sigma_max)


def simple_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Every (T/steps)-th table sigma from the top: σ_table[T − 1 − int(k·T/steps)] for k < steps, then 0."""
    if steps <= 0:
        return _empty()
    table = _table(model_sampling)
    stride = len(table) / steps
    return _with_zero([float(table[-(1 + int(k * stride))]) for k in range(steps)])


def ddim_uniform_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """DDIM's uniform timestep skipping (Song et al. 2021, §4.2): table indices 1, 1 + c, 1 + 2c, … below T with
    stride c = max(T // steps, 1), highest first, then 0.  When steps does not divide T the stride rounding yields
    extra timesteps, so the result can be longer than steps + 1 (e.g. 7 steps → 8 sigmas + 0)."""
    if steps <= 0:
        return _empty()
    table = _table(model_sampling)
    stride = max(len(table) // steps, 1)
    indices = list(range(1, len(table), stride))[::-1]
    return _with_zero(table[indices])


def beta_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """`beta_sigmas` with α = β = 0.6."""
    return beta_sigmas(model_sampling, steps, alpha=0.6, beta=0.6)


def linear_quadratic_sigmas(model_sampling, steps: int, threshold_noise: float = 0.025, linear_steps=None):
    """The linear-quadratic schedule of Movie Gen / Mochi 1 (Genmo 2024), in normalised noise s = σ/σ_max.

    Written as progress u = 1 − s over step index i = 0 … steps: the first L = steps//2 steps go linearly from
    u = 0 to the threshold τ = 0.025 (u_i = i·τ/L); the rest follow the quadratic that continues that line with the
    same value and slope at i = L and reaches u = 1 at i = steps:
    u_i = τ + (τ/L)(i − L) + k(i − L)² with k = (1 − τ − τ(steps − L)/L)/(steps − L)².  So the first half removes
    only 2.5% of the noise in small even steps and the second half accelerates to the clean end.  σ_i = (1 − u_i)·σ_max
    (ends in exactly 0).  One step: [σ_max, 0]."""
    if steps <= 0:
        return _empty()
    sigma_max = float(model_sampling.sigma_max)
    if steps == 1:
        return _with_zero([sigma_max])
    tau = float(threshold_noise)
    lin = steps // 2 if linear_steps is None else int(linear_steps)
    lin = min(max(lin, 1), steps - 1)
    quad = steps - lin
    k = (1.0 - tau - tau * quad / lin) / quad ** 2
    progress = [i * tau / lin for i in range(lin)]
    progress += [tau + (tau / lin) * (i - lin) + k * (i - lin) ** 2 for i in range(lin, steps)]
    return torch.tensor([(1.0 - u) * sigma_max for u in progress] + [0.0], dtype=torch.float32)


def linear_quadratic_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """`linear_quadratic_sigmas` with threshold 0.025 and steps//2 linear steps."""
    return linear_quadratic_sigmas(model_sampling, steps)


def kl_optimal_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """Sabour et al. 2024 (*Align Your Steps*), the KL-optimal schedule: σ(t) = tan(t·atan σ_min + (1−t)·atan σ_max)
    for t = linspace(0, 1, steps), then 0."""
    if steps <= 0:
        return _empty()
    t = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = math.atan(model_sampling.sigma_min), math.atan(model_sampling.sigma_max)
    return _with_zero(torch.tan(t * lo + (1.0 - t) * hi))
