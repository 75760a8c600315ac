"""An analytically solvable diffusion problem for sampler tests.

Data x0 ~ N(mean, std²) (elementwise, independent).  Noised with the k-diffusion (variance-exploding) convention
x = x0 + sigma·n, the exact denoiser is the posterior mean

    D(x, sigma) = E[x0 | x] = (std²·x + sigma²·mean) / (std² + sigma²),

the marginal at noise level sigma is N(mean, std² + sigma²), and the probability-flow ODE dx/dsigma = (x − D)/sigma has
the closed-form solution x(sigma) = mean + (x_T − mean)·sqrt(std² + sigma²)/sqrt(std² + sigma_T²), so its endpoint at
sigma = 0 is `exact_ode_solution`.  Every correct sampler started from `initial_noise` must end with samples whose
mean/std match (mean, std).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


class GaussianDenoiser:
    """model(x, sigma, **kw) -> E[x0|x] for x0 ~ N(mean, std²); sigma is a [B] tensor (or scalar) broadcast over the
    non-batch dims.  Counts model evaluations in `.calls`; `uncond_denoised` is None (no CFG) unless a test sets it."""

    def __init__(self, mean: float, std: float):
        self.mean = float(mean)
        self.std = float(std)
        self.calls = 0
        self.uncond_denoised = None
        self.sigmas_seen = []

    def __call__(self, x: torch.Tensor, sigma, **kwargs) -> torch.Tensor:
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 1:
            sigma = sigma.reshape(sigma.shape[0], *([1] * (x.ndim - 1)))
        self.sigmas_seen.append(float(sigma.flatten()[0]))
        var = self.std ** 2
        return (var * x + sigma ** 2 * self.mean) / (var + sigma ** 2)


def gaussian_denoiser(mean: float, std: float) -> GaussianDenoiser:
    """The exact posterior-mean denoiser for data N(mean, std²) (see module docstring)."""
    return GaussianDenoiser(mean, std)


def exact_ode_solution(x_T: torch.Tensor, sigma_T: float, mean: float, std: float) -> torch.Tensor:
    """Endpoint at sigma = 0 of the probability-flow ODE started at x_T at noise level sigma_T."""
    return mean + (x_T - mean) * (std / math.sqrt(std ** 2 + float(sigma_T) ** 2))


def initial_noise(shape: Sequence[int], sigma_max: float, mean: float, std: float, seed: int = 0) -> torch.Tensor:
    """Exact samples of the noised marginal N(mean, std² + sigma_max²) (float32, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    return mean + math.sqrt(std ** 2 + float(sigma_max) ** 2) * torch.randn(tuple(shape), generator=gen)
