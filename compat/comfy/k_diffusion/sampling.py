"""`comfy.k_diffusion.sampling`: `sample_<name>` for every sampler we register, and the helpers packs use.

Each function has k-diffusion's signature, `sample_x(model, x, sigmas, extra_args=None, callback=None,
disable=None, **options)`, where `model(x, sigma, **extra_args)` returns the denoised prediction.
"""
from __future__ import annotations

from typing import Any

import torch

from diffusion.sampling.noise import BrownianTreeNoiseSampler, default_noise_sampler  # noqa: F401
from diffusion.sampling.registry import SAMPLERS
from diffusion.sampling.samplers_basic import get_ancestral_step, to_d  # noqa: F401
from diffusion.sampling.schedulers import exponential_sigmas, karras_sigmas, polyexponential_sigmas


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu") -> torch.Tensor:
    return karras_sigmas(n, sigma_min, sigma_max, rho).to(device)


def get_sigmas_exponential(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> torch.Tensor:
    return exponential_sigmas(n, sigma_min, sigma_max).to(device)


def get_sigmas_polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
                               device: Any = "cpu") -> torch.Tensor:
    return polyexponential_sigmas(n, sigma_min, sigma_max, rho).to(device)


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def __getattr__(name: str) -> Any:
    """`sample_<registered name>`, e.g. sample_euler, sample_dpmpp_2m_sde_gpu."""
    if name.startswith("sample_") and name[len("sample_"):] in SAMPLERS:
        return SAMPLERS[name[len("sample_"):]]
    raise AttributeError(f"module 'comfy.k_diffusion.sampling' has no attribute {name!r}")
