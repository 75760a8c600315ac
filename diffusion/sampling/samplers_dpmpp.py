"""DPM-Solver++ family: dpmpp_2s_ancestral, dpmpp_sde, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m_sde.

All solvers work in the k-diffusion (variance-exploding) parametrisation x = x0 + σ·n with the data prediction
D(x, σ) ≈ E[x0 | x] and the half-log-SNR time λ = −log σ.  For a step σ_s → σ_t with h = λ_t − λ_s > 0 the
probability-flow ODE dx/dλ = −(x − D) has the exact solution (the "exponential integrator" / variation of constants
of Lu et al. 2022b, eq. 8 with α = 1)

    x_t = e^{−h}·x_s + ∫_0^h e^{−(h−u)} D(λ_s + u) du.

The SDE family used by the stochastic solvers interpolates between that ODE (η = 0) and the reverse SDE (η = 1):

    dx/dλ = −(1 + η)(x − D) + σ·sqrt(2η)·dW/dλ,

whose exact solution with a = 1 + η is (Lu et al. 2022b, appendix on SDE-DPM-Solver++)

    x_t = e^{−a·h}·x_s + a·∫_0^h e^{−a(h−u)} D(λ_s + u) du + σ_t·sqrt(1 − e^{−2ηh})·z.

Expanding D(λ_s + u) = Σ_k u^k/k!·D^{(k)} turns the integral into Σ_k a·h^{k+1}·φ_{k+1}(−a·h)·D^{(k)} with the
phi functions φ_k(z) = ∫_0^1 e^{(1−θ)z} θ^{k−1}/(k−1)! dθ (`phi`), and the solvers differ only in how they estimate
the derivatives D^{(k)} (previous steps = multistep; an intermediate evaluation = singlestep).  A step to σ = 0 has
h = ∞: the exact update is then simply x_t = D(x_s, σ_s) (every derivative coefficient would diverge), which is what
all solvers here do on such a final step.

`phi` and `ancestral_split`, which other solver modules use too, live here; the step loop in step_loop.py.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from diffusion.sampling.noise import ancestral_noise_sampler, sde_noise_sampler
from diffusion.sampling.samplers_rf import is_rectified_flow, sample_dpmpp_2s_ancestral_rf
from diffusion.sampling.step_loop import StepLoop, denoise

# ---------------------------------------------------------------------------------------------------------------------
# shared helpers


def phi(k: int, z: float) -> float:
    """φ_k(z) = ∫_0^1 e^{(1−θ)z} θ^{k−1}/(k−1)! dθ  (φ_0 = e^z, φ_1 = (e^z − 1)/z, φ_{k+1} = (φ_k − 1/k!)/z).

    Computed in double precision without cancellation: the power series Σ_n z^n/(n+k)! for |z| < 1, otherwise
    φ_1 from expm1 and the recurrence (which only loses a digit or so per level for |z| ≥ 1)."""
    z = float(z)
    if k == 0:
        return math.exp(z)
    if abs(z) < 1.0:
        total, term = 0.0, 1.0 / math.factorial(k)
        for n in range(30):
            total += term
            term *= z / (n + k + 1)
        return total
    value = math.expm1(z) / z
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> Tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step σ → σ_next: the DDPM/DDIM posterior of Song et al. 2021 ("Denoising
    Diffusion Implicit Models", eq. 16, in the VE form) injects σ_up = η·σ_next·sqrt(1 − σ_next²/σ²) of fresh noise,
    so the deterministic part of the step goes to σ_down = sqrt(σ_next² − σ_up²)."""
    if sigma_next <= 0.0 or eta <= 0.0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(max(0.0, 1.0 - (sigma_next / sigma) ** 2)))
    return math.sqrt(max(0.0, sigma_next ** 2 - sigma_up ** 2)), sigma_up


def sde_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, eta: float,
             noise: Optional[torch.Tensor]) -> torch.Tensor:
    """First-order step of the η-SDE above (SDE-DPM-Solver++1; DDIM-η in log-SNR form): with a = 1 + η,
    x_t = e^{−ah}·x + (1 − e^{−ah})·D + σ_t·sqrt(1 − e^{−2ηh})·noise (noise already scaled by s_noise)."""
    if sigma_next <= 0.0:
        return denoised
    h = math.log(sigma / sigma_next)
    a = 1.0 + eta
    x = math.exp(-a * h) * x - math.expm1(-a * h) * denoised
    if eta > 0.0 and noise is not None:
        x = x + sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)) * noise
    return x


# ---------------------------------------------------------------------------------------------------------------------
# singlestep solvers


def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                              eta: float = 1.0, s_noise: float = 1.0):
    """DPM-Solver++(2S) (Lu et al. 2022b, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models", Algorithm 1 with r = 1/2) for the deterministic part of each ancestral step, then fresh noise.

    Each step σ → σ_next is split (`ancestral_split`) into a deterministic move to σ_down and σ_up of new noise.  The
    move uses the midpoint λ_m = λ_s + h/2 (σ_m = sqrt(σ·σ_down)): u = (σ_m/σ)·x − (e^{−h/2} − 1)·D(x, σ), then
    x ← (σ_down/σ)·x − (e^{−h} − 1)·D(u, σ_m).  A step to σ_down = 0 returns D(x, σ).  Two model calls per step
    except the last. Rectified-flow models: samplers_rf.py."""
    if is_rectified_flow(model):
        return sample_dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args, callback, disable, noise_sampler, eta,
                                            s_noise)
    extra_args = extra_args or {}
    noise_sampler = ancestral_noise_sampler(x, extra_args, noise_sampler)
    loop = StepLoop(model, sigmas, extra_args, callback, end_on_zero=False, skip_repeated=False)
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        if sigma_down <= 0.0:
            x = denoised
        else:
            h = math.log(sigma / sigma_down)
            sigma_mid = math.sqrt(sigma * sigma_down)
            x_mid = (sigma_mid / sigma) * x - math.expm1(-0.5 * h) * denoised
            denoised_mid = denoise(model, x_mid, sigma_mid, extra_args)
            x = (sigma_down / sigma) * x - math.expm1(-h) * denoised_mid
        if sigma_next > 0.0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            if sigma_up > 0.0:
                x = x + noise * (s_noise * sigma_up)
    return loop.result(x)


def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                     eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5):
    """DPM-Solver++ SDE, singlestep second order (Lu et al. 2022b, SDE-DPM-Solver++ with the 2S midpoint rule,
    r = 1/2) on the η-SDE of the module docstring, with Brownian-tree noise.

    Step σ → σ_next (h = log(σ/σ_next)): a first-order SDE step (`sde_step`) to σ_m = σ·e^{−r·h} with the Brownian
    increment over [σ, σ_m]; then from x the full step with the combined estimate
    D̄ = (1 − 1/(2r))·D(x, σ) + 1/(2r)·D(u, σ_m) and the increment over [σ, σ_next] (the same Brownian path, so
    both noises are consistent).  η = 0 gives DPM-Solver++(2S).  A step to 0 returns D(x, σ)."""
    extra_args = extra_args or {}
    noise_sampler = sde_noise_sampler(x, sigmas, extra_args, noise_sampler)
    loop = StepLoop(model, sigmas, extra_args, callback, skip_repeated=False)
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        sigma_mid = sigma * math.exp(-r * h)
        noise_mid = noise_sampler(sigma, sigma_mid) * s_noise if eta > 0.0 else None
        x_mid = sde_step(x, denoised, sigma, sigma_mid, eta, noise_mid)
        denoised_mid = denoise(model, x_mid, sigma_mid, extra_args)
        fac = 1.0 / (2.0 * r)
        combined = (1.0 - fac) * denoised + fac * denoised_mid
        noise = noise_sampler(sigma, sigma_next) * s_noise if eta > 0.0 else None
        x = sde_step(x, combined, sigma, sigma_next, eta, noise)
    return loop.result(x)


# ---------------------------------------------------------------------------------------------------------------------
# multistep solvers


def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): second-order multistep exponential integrator in λ.

    With h_i = λ_{i+1} − λ_i and r = h_{i−1}/h_i the previous model output extrapolates the data prediction to the
    step's midpoint, D̄ = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}, and x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h_i} − 1)·D̄.
    The first step is first order (DDIM); a step to σ = 0 returns D_i.  One model call per step."""
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback)
    old_denoised, h_last = None, None
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        estimate = denoised
        if old_denoised is not None:
            r = h_last / h
            estimate = (1.0 + 1.0 / (2.0 * r)) * denoised - (1.0 / (2.0 * r)) * old_denoised
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        old_denoised, h_last = denoised, h
    return loop.result(x)


def _multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, order: int, eta: float, s_noise: float,
                   solver_type: str):
    """Multistep exponential integrator of the η-SDE (order 1..3) -- see dpmpp_2m_sde / dpmpp_3m_sde."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    extra_args = extra_args or {}
    loop = StepLoop(model, sigmas, extra_args, callback)
    if eta > 0.0 and s_noise != 0.0 and any(s > 0.0 for s in loop.sigma_values):
        noise_sampler = sde_noise_sampler(x, sigmas, extra_args, noise_sampler)
    else:
        noise_sampler = None
    history: List[Tuple[float, torch.Tensor]] = []   # (h of the step that followed it, D) newest first
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        h = math.log(sigma / sigma_next)
        a = 1.0 + eta
        ah = a * h
        x_next = math.exp(-ah) * x - math.expm1(-ah) * denoised
        used = min(order - 1, len(history))
        if used == 1:
            h1, d1 = history[0]
            if solver_type == "midpoint":
                # D evaluated at the step's midpoint by linear extrapolation (the 2M rule of Lu et al. 2022b)
                x_next = x_next - math.expm1(-ah) * (h / (2.0 * h1)) * (denoised - d1)
            else:
                # exact integral of the linear interpolant: a·h²·φ2(−ah)·D'
                x_next = x_next + (a * h * h * phi(2, -ah) / h1) * (denoised - d1)
        elif used == 2:
            (h1, d1), (h2, d2) = history[0], history[1]
            # quadratic through (0, D), (−h1, D_1), (−h1−h2, D_2) in u = λ − λ_i (Newton divided differences)
            f01 = (denoised - d1) / h1
            f12 = (d1 - d2) / h2
            f012 = (f01 - f12) / (h1 + h2)
            first = f01 + f012 * h1                 # D'(0)
            second = 2.0 * f012                     # D''(0)
            x_next = x_next + (a * h ** 2 * phi(2, -ah)) * first + (a * h ** 3 * phi(3, -ah)) * second
        if noise_sampler is not None:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            x_next = x_next + noise * (s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * eta * h)))
        x = x_next
        history.insert(0, (h, denoised))
        del history[max(order - 1, 0):]
    return loop.result(x)


def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint"):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, appendix: the 2M multistep rule applied to the data-prediction reverse
    SDE), on the η-SDE of the module docstring with Brownian-tree noise (η = 1: the reverse diffusion SDE; η = 0:
    DPM-Solver++(2M) up to the derivative rule).

    x_{i+1} = e^{−ah}·x_i + (1 − e^{−ah})·D_i + C·(D_i − D_{i−1}) + σ_{i+1}·sqrt(1 − e^{−2ηh})·s_noise·z with
    a = 1 + η and C = (1 − e^{−ah})·h/(2h_{i−1}) for solver_type "midpoint" (D at the step midpoint) or
    C = a·h²·φ2(−ah)/h_{i−1} for "heun" (exact integral of the linear interpolant).  First step first order; a step
    to 0 returns D_i."""
    return _multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, 2, eta, s_noise, solver_type)


def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                        eta: float = 1.0, s_noise: float = 1.0):
    """SDE-DPM-Solver++(3M): the third-order multistep exponential integrator of Lu et al. 2022b (DPM-Solver++(3M),
    §5 / appendix) on the η-SDE of the module docstring, with Brownian-tree noise.

    D is interpolated by the quadratic through the last three model outputs (in λ), giving
    x_{i+1} = e^{−ah}·x_i + Σ_{k=0..2} a·h^{k+1}·φ_{k+1}(−ah)·D^{(k)} + σ_{i+1}·sqrt(1 − e^{−2ηh})·s_noise·z.
    Orders 1 and 2 on the first two steps; a step to 0 returns D_i."""
    return _multistep_sde(model, x, sigmas, extra_args, callback, noise_sampler, 3, eta, s_noise, "heun")
