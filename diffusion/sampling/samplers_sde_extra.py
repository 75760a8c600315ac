"""Further stochastic solvers: dpmpp_2m_sde_heun, er_sde, seeds_2/3, exp_heun_2_x0(_sde), sa_solver(_pece).

All work in the k-diffusion parametrisation x = x0 + σ·n with the data prediction D(x, σ) and λ = −log σ, on the
η-SDE of samplers_dpmpp.py (η = 0: the probability-flow ODE; η = 1: the reverse diffusion SDE)

    dx/dλ = −(1 + η)(x − D) + σ·sqrt(2η)·dW/dλ,   exact step (a = 1 + η, h = λ_t − λ_s):
    x_t = e^{−ah}·x_s + a·∫_0^h e^{−a(h−u)} D(λ_s + u) du + N,   N ~ σ_t·sqrt(1 − e^{−2ηh})·z,

except ER-SDE, which parametrises the family of reverse SDEs by a noise scale function instead (see `sample_er_sde`).
A step split at an intermediate λ_m gets correctly correlated noise from two independent Brownian increments:
N(s→t) = e^{−a(λ_t−λ_m)}·N(s→m) + N(m→t) (the weighted stochastic integral splits the same way), which is what the
`_Noise` helper accumulates.  Per-step noise is the seeded Brownian tree of noise.py (docs/architecture.md §7).  A step to σ = 0
returns D(x, σ), the exact limit of every update here.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from diffusion.sampling.noise import sde_noise_sampler
from diffusion.sampling.samplers_dpmpp import phi, sample_dpmpp_2m_sde
from diffusion.sampling.step_loop import StepLoop, denoise, report, sigma_list
from diffusion.sampling.samplers_multistep import lagrange_integrals

# ---------------------------------------------------------------------------------------------------------------------
# helpers


def _noise_sampler(x, sigmas, extra_args, noise_sampler, stochastic: bool):
    """The Brownian-tree noise sampler when the run injects noise at all (None otherwise: no tree is built)."""
    sig = sigma_list(sigmas)
    if not stochastic or not any(s > 0.0 for s in sig):
        return None
    return sde_noise_sampler(x, sigmas, extra_args, noise_sampler)


class _Noise:
    """Noise of the η-SDE over [σ_s, current σ], built from independent Brownian increments of sub-intervals."""

    def __init__(self, noise_sampler, sigma: float, eta: float, s_noise: float):
        self.sampler, self.sigma, self.eta, self.s_noise = noise_sampler, sigma, eta, s_noise
        self.value: Optional[torch.Tensor] = None

    def advance(self, sigma_next: float) -> Optional[torch.Tensor]:
        """Extend the noise to σ_next: N ← e^{−a·dλ}·N + σ_next·sqrt(1 − e^{−2η·dλ})·s_noise·z; returns it."""
        if self.sampler is None or self.eta <= 0.0 or self.s_noise == 0.0:
            return None
        if sigma_next >= self.sigma:                # no time passes (a stage that ends where the step ends)
            return self.value
        dl = math.log(self.sigma / sigma_next)
        fresh = self.sampler(self.sigma, sigma_next) * (self.s_noise * sigma_next
                                                         * math.sqrt(-math.expm1(-2.0 * self.eta * dl)))
        if self.value is None:
            self.value = fresh
        else:
            self.value = math.exp(-(1.0 + self.eta) * dl) * self.value + fresh
        self.sigma = sigma_next
        return self.value


def _add(x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
    return x if noise is None else x + noise


# ---------------------------------------------------------------------------------------------------------------------
# DPM-Solver++(2M) SDE, heun variant


def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                             eta: float = 1.0, s_noise: float = 1.0):
    """SDE-DPM-Solver++(2M) with the "heun" derivative rule: the linear interpolant of the last two data predictions
    is integrated exactly (coefficient a·h²·φ2(−ah)/h_{i−1} on D_i − D_{i−1}) instead of being evaluated at the
    step's midpoint.  See samplers_dpmpp.sample_dpmpp_2m_sde."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                               noise_sampler=noise_sampler, eta=eta, s_noise=s_noise, solver_type="heun")


# ---------------------------------------------------------------------------------------------------------------------
# ER-SDE


def er_sde_noise_scaler(sigma):
    """The noise scale function φ(σ) = σ·(e^{σ^0.3} + 10) that Cui et al. 2024 recommend (their "function 5").
    φ(σ)/σ must be non-decreasing so that the step noise variance σ_t² − σ_s²·(φ_t/φ_s)² is non-negative."""
    return sigma * (np.exp(np.power(sigma, 0.3)) + 10.0)


def _log_quadrature(fn: Callable[[np.ndarray], np.ndarray], sigma_lo: float, sigma_hi: float,
                    points: int = 32) -> float:
    """∫_{σ_lo}^{σ_hi} fn(σ) dσ by Gauss–Legendre in v = log σ (the integrands here behave like 1/σ)."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    a, b = math.log(sigma_lo), math.log(sigma_hi)
    v = 0.5 * (b - a) * nodes + 0.5 * (a + b)
    s = np.exp(v)
    return float(np.sum(0.5 * (b - a) * weights * fn(s) * s))


def sample_er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                  s_noise: float = 1.0, noise_scaler: Optional[Callable] = None, max_stage: int = 3):
    """ER-SDE-Solver (Cui et al. 2024, "Elucidating the Solution Space of Extended Reverse-Time SDE for Diffusion
    Models"), VE data-prediction form, multistep of order `max_stage` (1..3).

    The extended reverse SDEs are indexed by a noise scale function φ (`noise_scaler`, default
    `er_sde_noise_scaler`; φ(σ) = σ is the probability-flow ODE, φ(σ) = σ² the reverse diffusion SDE).  Their exact
    step σ_s → σ_t is x_t = (φ_t/φ_s)·x_s + φ_t·∫_{σ_t}^{σ_s} φ'(σ)/φ(σ)²·D(σ) dσ + sqrt(σ_t² − σ_s²·(φ_t/φ_s)²)·z.
    Expanding D(σ) = D_s + (σ − σ_s)·D' + (σ − σ_s)²/2·D'' and integrating by parts gives the weights
    1 − φ_t/φ_s, (σ_t − σ_s) + φ_t·S and (σ_t − σ_s)²/2 + φ_t·S_u with S = ∫_{σ_t}^{σ_s} dσ/φ and
    S_u = ∫_{σ_t}^{σ_s} (σ − σ_s)/φ dσ (Gauss–Legendre in log σ).  D' and D'' are the backward divided differences
    of the previous outputs in σ, as in the paper's algorithm.  `noise_scaler` is applied to Python floats and to
    numpy arrays (the quadrature nodes).  One model call per step."""
    if max_stage not in (1, 2, 3):
        raise ValueError(f"er_sde: max_stage must be 1, 2 or 3, got {max_stage!r}")
    extra_args = extra_args or {}
    scaler = er_sde_noise_scaler if noise_scaler is None else noise_scaler
    loop = StepLoop(model, sigmas, extra_args, callback)
    noise_sampler = _noise_sampler(x, sigmas, extra_args, noise_sampler, s_noise != 0.0)
    old: List[Tuple[float, torch.Tensor]] = []          # (σ, D) of the previous steps, newest first
    old_d1: Optional[torch.Tensor] = None
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        phi_s, phi_t = float(scaler(sigma)), float(scaler(sigma_next))
        ratio = phi_t / phi_s
        x_next = ratio * x + (1.0 - ratio) * denoised
        d1 = None
        if max_stage >= 2 and old:
            d1 = (denoised - old[0][1]) / (sigma - old[0][0])
            integral = _log_quadrature(lambda s: 1.0 / scaler(s), sigma_next, sigma)
            x_next = x_next + ((sigma_next - sigma) + phi_t * integral) * d1
            if max_stage >= 3 and old_d1 is not None:
                d2 = (d1 - old_d1) / ((sigma - old[1][0]) / 2.0)
                integral_u = _log_quadrature(lambda s: (s - sigma) / scaler(s), sigma_next, sigma)
                x_next = x_next + ((sigma_next - sigma) ** 2 / 2.0 + phi_t * integral_u) * d2
        if noise_sampler is not None:
            std = math.sqrt(max(0.0, sigma_next ** 2 - (sigma * ratio) ** 2))
            x_next = x_next + noise_sampler(sigmas[i], sigmas[i + 1]) * (s_noise * std)
        x = x_next
        old.insert(0, (sigma, denoised))
        del old[2:]
        old_d1 = d1
    return loop.result(x)


# ---------------------------------------------------------------------------------------------------------------------
# SEEDS and exponential Heun (singlestep exponential Runge–Kutta on the η-SDE)


def _check_noise_options(name: str, eta: float, s_noise: float) -> None:
    if eta < 0.0:
        raise ValueError(f"{name}: eta must be >= 0, got {eta}")
    if s_noise < 0.0:
        raise ValueError(f"{name}: s_noise must be >= 0, got {s_noise}")


def _two_stage(model, x, sigmas, extra_args, callback, noise_sampler, eta: float, s_noise: float, r: float,
               solver_type: str, name: str):
    """Two-stage exponential Runge–Kutta step on the η-SDE (SEEDS-2 / exponential Heun), see `sample_seeds_2`."""
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"{name}: solver_type must be 'phi_1' or 'phi_2', got {solver_type!r}")
    if not 0.0 < r <= 1.0:
        raise ValueError(f"{name}: r must be in (0, 1], got {r}")
    _check_noise_options(name, eta, s_noise)
    extra_args = extra_args or {}
    noise_sampler = _noise_sampler(x, sigmas, extra_args, noise_sampler, eta > 0.0 and s_noise > 0.0)
    loop = StepLoop(model, sigmas, extra_args, callback)
    a = 1.0 + eta
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        sigma_mid = sigma_next if r == 1.0 else sigma * math.exp(-r * h)
        noise = _Noise(noise_sampler, sigma, eta, s_noise)
        x_mid = _add(math.exp(-a * r * h) * x - math.expm1(-a * r * h) * denoised, noise.advance(sigma_mid))
        denoised_mid = denoise(model, x_mid, sigma_mid, extra_args)
        if solver_type == "phi_1":
            estimate = (1.0 - 0.5 / r) * denoised + (0.5 / r) * denoised_mid
            x_next = math.exp(-a * h) * x - math.expm1(-a * h) * estimate
        else:
            x_next = (math.exp(-a * h) * x - math.expm1(-a * h) * denoised
                      + (a * h * phi(2, -a * h) / r) * (denoised_mid - denoised))
        x = _add(x_next, noise.advance(sigma_next))
    return loop.result(x)


def sample_seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5, solver_type: str = "phi_1"):
    """SEEDS-2 (Gonzalez et al. 2023, "SEEDS: Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion
    Models"), data-prediction form: a two-stage stochastic exponential Runge–Kutta method.

    Step λ_s → λ_t = λ_s + h with a = 1 + η: the first-order stage to λ_m = λ_s + r·h,
    u = e^{−arh}·x + (1 − e^{−arh})·D(x, σ_s) + N(s→m), then with "phi_1" (the published SEEDS-2)
    x_t = e^{−ah}·x + (1 − e^{−ah})·[(1 − 1/(2r))·D_s + 1/(2r)·D(u, σ_m)] + N(s→t), or with "phi_2" the exact
    integral of the linear interpolant, (1 − e^{−ah})·D_s + a·h·φ2(−ah)/r·(D_m − D_s).  The two noises are built
    from independent Brownian increments over [s, m] and [m, t] so that N(s→t) = e^{−a(1−r)h}·N(s→m) + N(m→t) has
    the exact joint law.  η = 0 (or s_noise = 0 for the noise) gives a second-order ODE solver.  Two calls per step."""
    return _two_stage(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, r, solver_type,
                      "seeds_2")


def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Exponential Heun in data prediction (Hochbruck & Ostermann 2005's second-order exponential Runge–Kutta
    method with c2 = 1, applied to the probability-flow ODE in λ): an exponential Euler step to σ_next, then
    x_t = e^{−h}·x + (1 − e^{−h})·D_s + h·φ2(−h)·(D(u, σ_t) − D_s).  Two model calls per step."""
    return _two_stage(model, x, sigmas, extra_args, callback, noise_sampler, 0.0, 0.0, 1.0, "phi_2",
                      "exp_heun_2_x0")


def sample_exp_heun_2_x0_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                             eta: float = 1.0, s_noise: float = 1.0):
    """Exponential Heun (`exp_heun_2_x0`) on the η-SDE: both stages carry the same Brownian noise of the step
    (the stage ends at σ_next), so it is SEEDS-2 with r = 1 and the "phi_2" rule.  Two model calls per step."""
    return _two_stage(model, x, sigmas, extra_args, callback, noise_sampler, eta, s_noise, 1.0, "phi_2",
                      "exp_heun_2_x0_sde")


def sample_seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1.0 / 3.0, r_2: float = 2.0 / 3.0):
    """SEEDS-3 (Gonzalez et al. 2023), data-prediction form: three-stage stochastic exponential Runge–Kutta method
    with stages at λ_s + r_1·h and λ_s + r_2·h (defaults 1/3, 2/3, the third-order choice of the exponential
    Runge–Kutta order conditions that use φ2 only).  With a = 1 + η:

        u1 = e^{−a r1 h}·x + (1 − e^{−a r1 h})·D_s + N(s→m1)
        u2 = e^{−a r2 h}·x + (1 − e^{−a r2 h})·D_s + a·r2²·h·φ2(−a r2 h)/r1·(D(u1) − D_s) + N(s→m2)
        x_t = e^{−ah}·x + (1 − e^{−ah})·D_s + a·h·φ2(−ah)/r2·(D(u2) − D_s) + N(s→t)

    with the noises accumulated from independent Brownian increments of [s, m1], [m1, m2], [m2, t] (module
    docstring).  η = 0 gives a third-order ODE solver.  Three model calls per step."""
    if not 0.0 < r_1 < r_2 <= 1.0:
        raise ValueError(f"seeds_3: need 0 < r_1 < r_2 <= 1, got r_1={r_1}, r_2={r_2}")
    _check_noise_options("seeds_3", eta, s_noise)
    extra_args = extra_args or {}
    noise_sampler = _noise_sampler(x, sigmas, extra_args, noise_sampler, eta > 0.0 and s_noise > 0.0)
    loop = StepLoop(model, sigmas, extra_args, callback)
    a = 1.0 + eta
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        sigma_1, sigma_2 = sigma * math.exp(-r_1 * h), sigma * math.exp(-r_2 * h)
        noise = _Noise(noise_sampler, sigma, eta, s_noise)
        x_1 = _add(math.exp(-a * r_1 * h) * x - math.expm1(-a * r_1 * h) * denoised, noise.advance(sigma_1))
        denoised_1 = denoise(model, x_1, sigma_1, extra_args)
        x_2 = (math.exp(-a * r_2 * h) * x - math.expm1(-a * r_2 * h) * denoised
               + (a * r_2 ** 2 * h * phi(2, -a * r_2 * h) / r_1) * (denoised_1 - denoised))
        x_2 = _add(x_2, noise.advance(sigma_2))
        denoised_2 = denoise(model, x_2, sigma_2, extra_args)
        x_next = (math.exp(-a * h) * x - math.expm1(-a * h) * denoised
                  + (a * h * phi(2, -a * h) / r_2) * (denoised_2 - denoised))
        x = _add(x_next, noise.advance(sigma_next))
    return loop.result(x)


# ---------------------------------------------------------------------------------------------------------------------
# SA-Solver (stochastic Adams)


def exp_lagrange_weights(nodes: Sequence[float], h: float, a: float, quad_points: int = 24) -> List[float]:
    """[∫_0^h a·e^{−a(h−u)}·ℓ_j(u) du for each j], ℓ_j the Lagrange basis of `nodes` (in u = λ − λ_i).  Gauss–
    Legendre on [0, h]: the integrand is an exponential times a polynomial, so 24 points reach double precision for
    the step sizes of sampling schedules.  They sum to 1 − e^{−ah} (constants are integrated exactly)."""
    return lagrange_integrals(nodes, 0.0, h, quad_points=quad_points, weight=lambda u: a * np.exp(-a * (h - u)))


def default_tau(model, start_percent: float = 0.2, end_percent: float = 0.8) -> Callable[[float], float]:
    """τ(σ) = 1 inside the middle of the diffusion (σ between the model's sigmas at 20 % and 80 % of sampling,
    SA-Solver's published setting of stochasticity only away from both ends), 0 elsewhere.  Without a model
    sampling object to ask (`model.sampling` / `model.model_sampling`), τ = 1 everywhere."""
    sampling = getattr(model, "sampling", None)
    if sampling is None:
        sampling = getattr(model, "model_sampling", None)
    if sampling is None or not hasattr(sampling, "percent_to_sigma"):
        return lambda sigma: 1.0
    sigma_hi, sigma_lo = float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))
    return lambda sigma: 1.0 if sigma_lo <= float(sigma) <= sigma_hi else 0.0


def _sa_solver(model, x, sigmas, extra_args, callback, noise_sampler, predictor_order: int, corrector_order: int,
               use_pece: bool, tau_func: Optional[Callable], s_noise: float, name: str):
    if not 1 <= predictor_order <= 6 or not 0 <= corrector_order <= 6:
        raise ValueError(f"{name}: predictor_order must be 1..6 and corrector_order 0..6, got "
                         f"{predictor_order}, {corrector_order}")
    if s_noise < 0.0:
        raise ValueError(f"{name}: s_noise must be >= 0, got {s_noise}")
    extra_args = extra_args or {}
    tau = default_tau(model) if tau_func is None else tau_func
    sig = sigma_list(sigmas)
    noise_sampler = _noise_sampler(x, sigmas, extra_args, noise_sampler,
                                   s_noise > 0.0 and any(tau(s) > 0.0 for s in sig if s > 0.0))
    history: List[Tuple[float, torch.Tensor]] = []       # (λ, D) newest first
    denoised = None                                      # D at the current x, when already known (PEC)
    for i in range(len(sig) - 1):
        sigma, sigma_next = sig[i], sig[i + 1]
        if denoised is None:
            denoised = denoise(model, x, sigma, extra_args)
        report(callback, x, i, sigmas[i], denoised)
        if sigma_next <= 0.0:
            if i > 0 and not use_pece:                   # D so far was taken at the predictor's point
                denoised = denoise(model, x, sigma, extra_args)
            x = denoised
            break
        if sigma_next == sigma:
            continue
        lam, h = -math.log(sigma), math.log(sigma / sigma_next)
        history.insert(0, (lam, denoised))
        del history[max(predictor_order, corrector_order - 1, 1):]
        t = float(tau(sigma))
        eta = t * t
        a = 1.0 + eta
        base = math.exp(-a * h) * x
        noise = None
        if noise_sampler is not None and eta > 0.0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1]) * (s_noise * sigma_next
                                                               * math.sqrt(-math.expm1(-2.0 * eta * h)))
        # predictor: Adams–Bashforth-type interpolation of the last outputs
        used = history[:predictor_order]
        weights = exp_lagrange_weights([l - lam for l, _ in used], h, a)
        x_pred = _add(base + sum(w * d for w, (_, d) in zip(weights, used)), noise)
        denoised_next = denoise(model, x_pred, sigma_next, extra_args)
        if corrector_order == 0:
            x, denoised = x_pred, denoised_next
            continue
        # corrector: Adams–Moulton-type, the new output at λ_{i+1} = λ_i + h joins the nodes; same noise
        used = [(lam + h, denoised_next)] + history[:corrector_order - 1]
        weights = exp_lagrange_weights([l - lam for l, _ in used], h, a)
        x = _add(base + sum(w * d for w, (_, d) in zip(weights, used)), noise)
        denoised = denoise(model, x, sigma_next, extra_args) if use_pece else denoised_next
    return x


def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                     predictor_order: int = 3, corrector_order: int = 4, tau_func: Optional[Callable] = None,
                     s_noise: float = 1.0):
    """SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of Diffusion Models"),
    data-prediction form, predictor–corrector in PEC mode (one model call per step).

    On the SDE family dx/dλ = −(1 + τ²)(x − D) + σ·τ·sqrt(2)·dW/dλ (the η-SDE with η = τ(σ)²; τ = 0: the ODE),
    a step from λ_i with a = 1 + τ² is x_{i+1} = e^{−ah}·x_i + Σ_j b_j·D_j + σ_{i+1}·sqrt(1 − e^{−2τ²h})·ξ, the
    b_j integrating the Lagrange interpolant of the data predictions against a·e^{−a(λ_{i+1} − λ)}
    (`exp_lagrange_weights`).  The predictor (SA-Predictor, `predictor_order` nodes) uses the last outputs; the
    model is then called at the predicted point and the corrector (SA-Corrector, `corrector_order` nodes including
    that new output) redoes the step with the same ξ.  The new output is reused for the next step (PEC); the final
    step to σ = 0 evaluates the model at the corrected point and returns it.  Orders ramp up on the first steps.
    `tau_func(σ) -> τ` defaults to `default_tau` (1 in the middle 20 %..80 % of the diffusion, 0 outside)."""
    return _sa_solver(model, x, sigmas, extra_args, callback, noise_sampler, predictor_order, corrector_order,
                      False, tau_func, s_noise, "sa_solver")


def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                          predictor_order: int = 3, corrector_order: int = 4, tau_func: Optional[Callable] = None,
                          s_noise: float = 1.0):
    """SA-Solver in PECE mode: as `sa_solver`, but the model is evaluated again at the corrected point, and that
    output (rather than the one at the predicted point) enters the history.  Two model calls per step."""
    return _sa_solver(model, x, sigmas, extra_args, callback, noise_sampler, predictor_order, corrector_order,
                      True, tau_func, s_noise, "sa_solver_pece")
