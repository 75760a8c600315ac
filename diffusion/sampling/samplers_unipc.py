"""UniPC: unified predictor-corrector (Zhao, Bai, Rao, Zhou & Lu 2023, "UniPC: A Unified Predictor-Corrector
Framework for Fast Sampling of Diffusion Models"), data-prediction form, samplers uni_pc (B(h) = bh1) and
uni_pc_bh2 (B(h) = bh2).

Time λ = −log σ, step h = λ_t − λ_s > 0.  The exact step of the data-prediction ODE is
x_t = e^{−h}·x_s + ∫_0^h e^{−(h−u)} D(λ_s + u) du = e^{−h}·x_s + Σ_k h^{k+1}·φ_{k+1}(−h)·D^{(k)}.
UniPC's update with nodes at relative positions r_m = (λ_m − λ_s)/h is

    x_t = e^{−h}·x_s + h·φ1(−h)·D_s + B(h)·Σ_m a_m·(D_m − D_s)/r_m,

and expanding (D_m − D_s)/r_m = Σ_{k≥1} r_m^{k−1}·h^k/k!·D^{(k)} gives the order conditions (paper, Theorem 3.1:
R_p(h)·a_p = g_p(h)/B(h))

    Σ_m a_m·r_m^{k−1} = k!·h·φ_{k+1}(−h)/B(h),   k = 1..(number of unknowns),

solved exactly here for every order (a small linear system).  B(h) is any non-zero function with B(h) = O(h);
"bh1" is B(h) = h and "bh2" is B(h) = 1 − e^{−h} (both in the data-prediction sign convention).

UniP-p (predictor) uses the current and p − 1 previous model outputs (r_m < 0) and reaches order p; UniC
(corrector) adds the model output at the predicted point (r = 1) -- the evaluation the next step needs anyway, so it
costs no extra model call -- and raises the order to p + 1.  The corrector is not applied on the last step (its
result would never be evaluated); a step to σ = 0 returns the model's last data prediction.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch

from diffusion.sampling.samplers_dpmpp import phi
from diffusion.sampling.step_loop import denoise, report, sigma_list


def unipc_weights(rs: Sequence[float], h: float, variant: str) -> Tuple[List[float], float]:
    """(a, B(h)): the solution of Σ_m a_m·r_m^{k−1} = k!·h·φ_{k+1}(−h)/B(h), k = 1..len(rs)."""
    if variant == "bh1":
        b_h = h
    elif variant == "bh2":
        b_h = -math.expm1(-h)
    else:
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    n = len(rs)
    if n == 0:
        return [], b_h
    matrix = np.array([[r ** k for r in rs] for k in range(n)], dtype=np.float64)
    rhs = np.array([math.factorial(k) * h * phi(k + 1, -h) / b_h for k in range(1, n + 1)], dtype=np.float64)
    return [float(a) for a in np.linalg.solve(matrix, rhs)], b_h


def _update(base: torch.Tensor, d_s: torch.Tensor, points: Sequence[Tuple[float, torch.Tensor]], h: float,
            variant: str, predictor: bool = False) -> torch.Tensor:
    """base + B(h)·Σ_m a_m·(D_m − D_s)/r_m for points (r_m, D_m).  A predictor with a single previous point (UniP-2)
    takes a_1 = 1/2 as in the paper: it satisfies its only order condition up to O(h), which keeps order 2, and it
    is what makes B(h) matter (with the conditions solved exactly B(h)·a, hence the update, is B-independent)."""
    if not points:
        return base
    if predictor and len(points) == 1:
        weights, b_h = [0.5], unipc_weights([], h, variant)[1]
    else:
        weights, b_h = unipc_weights([r for r, _ in points], h, variant)
    out = base
    for (r, d), a in zip(points, weights):
        out = out + (b_h * a / r) * (d - d_s)
    return out


def _sample_unipc(model, x, sigmas, extra_args, callback, order: int, variant: str, lower_order_final: bool):
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    extra_args = extra_args or {}
    sig = sigma_list(sigmas)
    n = len(sig) - 1
    if n < 1:
        return x
    positive_steps = sum(1 for s in sig[1:] if s > 0.0)       # steps taken with the UniPC update
    history: List[Tuple[float, torch.Tensor]] = [(-math.log(sig[0]), denoise(model, x, sig[0], extra_args))]
    for i in range(n):
        sigma, sigma_next = sig[i], sig[i + 1]
        lam_s, d_s = history[0]
        report(callback, x, i, sigmas[i], d_s)
        if sigma_next <= 0.0:
            x = d_s
            break
        if sigma_next == sigma:
            continue
        h = -math.log(sigma_next) - lam_s
        p = min(order, len(history))
        if lower_order_final and positive_steps < 10:
            p = min(p, positive_steps - i)         # the last few (large) steps at decreasing order
        previous = [((lam - lam_s) / h, d) for lam, d in history[1:p]]
        base = math.exp(-h) * x + (h * phi(1, -h)) * d_s
        x_pred = _update(base, d_s, previous, h, variant, predictor=True)    # UniP-p
        if i == n - 1:
            x = x_pred
            break
        d_t = denoise(model, x_pred, sigma_next, extra_args)
        if sig[i + 2] > 0.0:
            x = _update(base, d_s, previous + [(1.0, d_t)], h, variant)       # UniC-p
        else:
            x = x_pred          # the next step returns d_t: a corrected x would never be used
        history.insert(0, (-math.log(sigma_next), d_t))
        del history[max(order, 1):]
    return x


def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                  order: int = 3, variant: str = "bh1", lower_order_final: bool = True):
    """UniPC (Zhao et al. 2023) with B(h) = h ("bh1"), predictor order 3 (orders 1, 2 on the first steps), UniC
    corrector; one model call per step.  See the module docstring."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, order, variant, lower_order_final)


def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                      order: int = 3, variant: str = "bh2", lower_order_final: bool = True):
    """UniPC (Zhao et al. 2023) with B(h) = 1 − e^{−h} ("bh2", the paper's recommendation for guided sampling);
    otherwise as uni_pc."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, order, variant, lower_order_final)
