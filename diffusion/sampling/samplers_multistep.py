"""Linear multistep solvers: ipndm, ipndm_v, deis, res_multistep.

In the k-diffusion parametrisation x = x0 + σ·n the probability-flow ODE is dx/dσ = ε(x, σ) with the noise
prediction ε = (x − D(x, σ))/σ.  Because the VE form has no linear drift, the exponential integrator of a VP model
(Zhang & Chen 2023, DEIS, eq. 9: x_t = Ψ(t, s)·x_s + ∫ Ψ(t, τ)·G(τ)·ε dτ) becomes, after rescaling x by α, the
plain integral x_{i+1} = x_i + ∫_{σ_i}^{σ_{i+1}} ε dσ: the σ-space (ρ) form of DEIS.  The solvers here approximate ε
by polynomial extrapolation through the previous outputs:

* ipndm / ipndm_v: Adams–Bashforth in σ with fixed (equal-step) or exact variable-step coefficients;
* deis: the time-polynomial tAB-DEIS, ε polynomial in the VP diffusion time t, integrated over σ;
* res_multistep: the data-prediction exponential integrator in λ = −log σ with phi-function weights (RES).
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from diffusion.sampling.samplers_dpmpp import phi
from diffusion.sampling.step_loop import StepLoop

# Adams–Bashforth coefficients for equal steps, newest derivative first (orders 1..4).
_AB_COEFFS = (
    (1.0,),
    (3.0 / 2.0, -1.0 / 2.0),
    (23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0),
    (55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0),
)


def lagrange_integrals(nodes: Sequence[float], a: float, b: float,
                       to_node_variable: Optional[Callable[[np.ndarray], np.ndarray]] = None,
                       quad_points: int = 24,
                       weight: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> List[float]:
    """[∫_a^b ℓ_j(τ(s)) ds for each j], ℓ_j the Lagrange basis polynomial of `nodes` (ℓ_j(nodes[m]) = δ_jm) in the
    variable τ = to_node_variable(s) (identity when None).  Gauss–Legendre quadrature on [a, b] (a > b allowed: the
    integral then carries its sign); exact for the polynomial case, and converged to double precision for the smooth
    t(σ) of DEIS with the default 24 points.  `weight(s)`, when given, multiplies the integrand."""
    x, w = np.polynomial.legendre.leggauss(quad_points)
    s = 0.5 * (b - a) * x + 0.5 * (a + b)
    w = 0.5 * (b - a) * w
    if weight is not None:
        w = w * weight(s)
    tau = s if to_node_variable is None else to_node_variable(s)
    out = []
    for j, node_j in enumerate(nodes):
        basis = np.ones_like(tau)
        for m, node_m in enumerate(nodes):
            if m != j:
                basis = basis * (tau - node_m) / (node_j - node_m)
        out.append(float(np.sum(w * basis)))
    return out


def _combine(eps: Sequence[torch.Tensor], coeffs: Sequence[float]) -> torch.Tensor:
    total = eps[0] * coeffs[0]
    for e, c in zip(eps[1:], coeffs[1:]):
        total = total + e * c
    return total


def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                 max_order: int = 4):
    """iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", §5 / appendix:
    "improved PNDM"): the 4th-order Adams–Bashforth method on dx/dσ = ε, with the lower-order Adams–Bashforth
    formulas (instead of PNDM's Runge–Kutta warm start) for the first three steps, so every step costs one model
    call.  The coefficients are the equal-step ones (55, −59, 37, −9)/24 etc. whatever the schedule -- that is the
    published method; see ipndm_v for exact variable-step weights.  The final step to σ = 0 is taken with the same
    multistep formula (the x-space ODE has no singularity there)."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback, end_on_zero=False)
    history: List[torch.Tensor] = []
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        eps = (x - denoised) / sigma
        history.insert(0, eps)
        del history[max_order:]
        x = x + (sigma_next - sigma) * _combine(history, _AB_COEFFS[len(history) - 1])
    return loop.result(x)


def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                   max_order: int = 4):
    """Variable-step iPNDM: Adams–Bashforth in σ whose weights are the exact integrals over [σ_i, σ_{i+1}] of the
    Lagrange basis on the actual previous nodes σ_i, σ_{i−1}, ... (variable-step AB; Zhang & Chen 2023 iPNDM, used
    with non-uniform schedules as in Zhou et al. 2024, "Fast ODE-based Sampling for Diffusion Models in Around 5
    Steps").  Order 1, 2, 3 warm-up, then order `max_order` (4); one model call per step."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback, end_on_zero=False)
    history: List[torch.Tensor] = []
    nodes: List[float] = []
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        history.insert(0, (x - denoised) / sigma)
        nodes.insert(0, sigma)
        del history[max_order:], nodes[max_order:]
        x = x + _combine(history, lagrange_integrals(nodes, sigma, sigma_next))
    return loop.result(x)


def vp_time(sigma, beta_min: float = 0.1, beta_max: float = 20.0):
    """Diffusion time t ∈ [0, 1] of the VP-SDE with linear β(t) = β_min + t(β_max − β_min) (Song et al. 2021, the
    schedule DEIS is formulated on) at which the VE noise level is σ: log(1 + σ²) = β_min·t + (β_max − β_min)·t²/2.
    Works elementwise on numpy arrays and floats; stable near σ = 0."""
    beta_d = beta_max - beta_min
    log_var = np.log1p(np.square(sigma))
    return 2.0 * log_var / (np.sqrt(beta_min ** 2 + 2.0 * beta_d * log_var) + beta_min)


def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                max_order: int = 3, mode: str = "tab", beta_min: float = 0.1, beta_max: float = 20.0):
    """DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator", §4, tAB-DEIS).

    The exponential integrator turns the step into x_{i+1} = x_i + ∫_{σ_i}^{σ_{i+1}} ε dσ (module docstring);
    tAB-DEIS fits ε with the Lagrange polynomial through the last `max_order` outputs as a function of the diffusion
    time t (the VP-SDE time, `vp_time`), so the weights are C_ij = ∫_{σ_i}^{σ_{i+1}} ℓ_j(t(σ)) dσ, computed by
    Gauss–Legendre quadrature over σ (`lagrange_integrals`).  mode="rhoab" fits the polynomial in ρ = σ instead
    (ρAB-DEIS, the same as ipndm_v).  Orders ramp up from 1; the step to σ = 0 is taken with the same rule.
    One model call per step."""
    if mode not in ("tab", "rhoab"):
        raise ValueError(f"mode must be 'tab' or 'rhoab', got {mode!r}")
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback, end_on_zero=False)
    to_t = None
    if mode == "tab":
        def to_t(s):
            return vp_time(s, beta_min, beta_max)
    history: List[torch.Tensor] = []
    nodes: List[float] = []
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        history.insert(0, (x - denoised) / sigma)
        nodes.insert(0, sigma if to_t is None else float(to_t(sigma)))
        del history[max_order:], nodes[max_order:]
        x = x + _combine(history, lagrange_integrals(nodes, sigma, sigma_next, to_t))
    return loop.result(x)


def sample_res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """RES multistep (Zhang, Song & Chen 2023/2024, "Improved Order Analysis and Design of Exponential Integrator for
    Diffusion Models Sampling": the refined exponential solver, 2nd-order multistep variant).

    In λ = −log σ the exact step is x_{i+1} = e^{−h}·x_i + ∫_0^h e^{−(h−u)} D(λ_i + u) du.  RES satisfies the
    order conditions of that integral exactly (rather than DPM-Solver++(2M)'s midpoint approximation): with the
    linear interpolant through D_{i−1} (at u = −h_{i−1}) and D_i,
    x_{i+1} = e^{−h}·x_i + h·φ1(−h)·D_i + h²·φ2(−h)·(D_i − D_{i−1})/h_{i−1}.
    First step first order; a step to σ = 0 returns D_i.  One model call per step."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback)
    old_denoised, h_last = None, None
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        x_next = math.exp(-h) * x + (h * phi(1, -h)) * denoised
        if old_denoised is not None:
            x_next = x_next + (h * h * phi(2, -h) / h_last) * (denoised - old_denoised)
        x = x_next
        old_denoised, h_last = denoised, h
    return loop.result(x)
