"""Flow-matching model sampling (rectified flow), as SD3, AuraFlow and Flux are trained: the noisy latent is the
straight line x_σ = (1 − σ)·x0 + σ·n for σ in (0, 1], and the network predicts the velocity n − x0, so the
denoised estimate is x − σ·v ("CONST" parameterisation in ComfyUI's terms).

Sampling times are shifted towards the noisy end. SD3 and AuraFlow use the SNR shift
σ(t) = s·t / (1 + (s − 1)·t) (Esser et al. 2024, eq. 23), with the network's timestep σ·multiplier (1000 for SD3,
1 for AuraFlow); Flux uses the exponential shift σ(t) = e^μ / (e^μ + (1/t − 1)) with μ chosen from the image's
size, and its network takes σ itself. Both hold a table of 1000 (SD3) or 10000 (Flux) σ values at t = i/T, which
the schedulers read like the discrete SD table (`sigmas`, `sigma_min`, `sigma_max`, `sigma(t)`, `timestep(σ)`).
"""
from __future__ import annotations

import math
from typing import Union

import torch

from diffusion.sampling.model_sampling import SigmaTable, broadcast_sigma

Number = Union[float, int, torch.Tensor]


def snr_shift(shift: float, t: Number) -> torch.Tensor:
    """σ for time t in [0, 1] under SD3's shift s: s·t / (1 + (s − 1)·t); s = 1 is the identity."""
    t = torch.as_tensor(t, dtype=torch.float32)
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def exponential_shift(mu: float, t: Number) -> torch.Tensor:
    """σ for time t in (0, 1] under Flux's shift μ: e^μ / (e^μ + (1/t − 1))."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def flux_shift_for_size(width: int, height: int, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Flux's μ for an image: linear in its number of 2x2 latent patches, base_shift at 256 patches (256²) and
    max_shift at 4096 (1024²)."""
    patches = width * height / (8 * 8 * 2 * 2)
    slope = (max_shift - base_shift) / (4096 - 256)
    return patches * slope + (base_shift - slope * 256)


class FlowModelSampling(SigmaTable):
    """Rectified-flow sampling: `kind` "snr" (SD3, AuraFlow; `multiplier` scales σ to the network's timestep) or
    "exponential" (Flux; the network takes σ)."""

    prediction = "flow"

    def __init__(self, shift: float = 1.0, multiplier: float = 1000.0, kind: str = "snr", timesteps: int = 1000):
        super().__init__()
        if kind not in ("snr", "exponential"):
            raise ValueError(f"unknown flow shift {kind!r}; expected 'snr' or 'exponential'")
        self.shift, self.multiplier, self.kind = float(shift), float(multiplier), kind
        times = torch.arange(1, timesteps + 1, dtype=torch.float32) / timesteps
        self.register_buffer("sigmas", self._shifted(times).to(torch.float32), persistent=False)

    def _shifted(self, t: Number) -> torch.Tensor:
        return snr_shift(self.shift, t) if self.kind == "snr" else exponential_shift(self.shift, t)

    def timestep(self, sigma: Number) -> torch.Tensor:
        """The network's timestep for σ: σ·multiplier (SD3: 1000, AuraFlow and Flux: 1)."""
        return torch.as_tensor(sigma, dtype=torch.float32) * self.multiplier

    def sigma(self, timestep: Number) -> torch.Tensor:
        """σ at a network timestep: the shift applied to timestep / multiplier."""
        return self._shifted(torch.as_tensor(timestep, dtype=torch.float32) / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        """σ at a fraction of sampling: 0 → 1.0 (pure noise), 1 → 0.0, else the shift at time 1 − percent."""
        percent = float(percent)
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(self._shifted(torch.tensor(1.0 - percent)))

    def calculate_input(self, sigma: Number, x: torch.Tensor) -> torch.Tensor:
        """The network sees the noisy latent itself."""
        return x

    def calculate_denoised(self, sigma: Number, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x0 = x − σ·v for the predicted velocity v."""
        return x - model_output * broadcast_sigma(sigma, model_output)

    def noise_scaling(self, sigma: Number, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The point σ along the line from the latent to the noise: σ·n + (1 − σ)·latent."""
        sigma = broadcast_sigma(sigma, noise)
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma: Number, latent: torch.Tensor) -> torch.Tensor:
        """Undo the line's (1 − σ) scaling of the latent (identity at the usual final σ = 0)."""
        return latent / (1.0 - broadcast_sigma(sigma, latent))
