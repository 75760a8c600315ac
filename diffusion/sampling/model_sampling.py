"""Discrete-time model sampling for Stable Diffusion: the noise table and the model-parameterisation conversions.

Samplers work in the k-diffusion (variance-exploding) formulation: a noisy latent is x = x0 + σ·n and a "model" is a
denoiser returning an estimate of x0.  An SD UNet is a DDPM network trained on the variance-preserving chain
x_vp = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·n, which is the same chain scaled by sqrt(ᾱ) = 1/sqrt(1 + σ²) with

    σ_t = sqrt((1 − ᾱ_t) / ᾱ_t).

`DiscreteModelSampling` holds that table (1000 entries for SD) and converts between the denoiser view and the
network's inputs/outputs: c_in = 1/sqrt(σ² + 1), the discrete timestep index nearest in log-sigma, and the
prediction type (eps, v, x0) to denoised (docs/architecture.md §7).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

Number = Union[float, int, torch.Tensor]

# Terminal ᾱ used when zero-terminal-SNR rescaling would make it exactly 0 (σ = ∞): σ_T = sqrt((1−ᾱ)/ᾱ) ≈ 4518.9.
# It is the value the reference engine clamps to, so zero-SNR schedules agree numerically with it.
ZSNR_TERMINAL_ALPHA_CUMPROD = 4.8973451890853435e-08

# What percent_to_sigma returns for a start percent of 0: larger than any sigma, so a range starting at 0 covers
# the first step whatever the schedule.
SIGMA_ABOVE_ALL = 999999999.9


def sd_betas(linear_start: float = 0.00085, linear_end: float = 0.012, timesteps: int = 1000) -> torch.Tensor:
    """SD's "scaled linear" betas: linear in sqrt space, beta_i = linspace(sqrt(start), sqrt(end), T)_i² (float64)."""
    return torch.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, *Common Diffusion Noise Schedules and Sample Steps Are Flawed*, Alg. 1: shift and scale
    sqrt(ᾱ) so that the last entry is 0 and the first is unchanged, i.e.
    sqrt(ᾱ)' = (sqrt(ᾱ) − sqrt(ᾱ_T))·sqrt(ᾱ_0)/(sqrt(ᾱ_0) − sqrt(ᾱ_T)).  The terminal ᾱ' = 0 would give σ = ∞, so it
    is clamped to ZSNR_TERMINAL_ALPHA_CUMPROD (a finite σ_max ≈ 4519)."""
    sqrt_ab = alphas_cumprod.to(torch.float64).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    out = sqrt_ab ** 2
    out[-1] = ZSNR_TERMINAL_ALPHA_CUMPROD
    return out


def broadcast_sigma(sigma: Number, like: torch.Tensor) -> torch.Tensor:
    """sigma (scalar, [B] or already broadcastable) reshaped to broadcast over `like` = [B, ...]."""
    sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if sigma.ndim == 1 and like.ndim > 1:
        sigma = sigma.reshape(sigma.shape[0], *([1] * (like.ndim - 1)))
    return sigma


class SigmaTable(torch.nn.Module):
    """A model's table of sampling sigmas (buffer `sigmas`, ascending) as the schedulers read it."""

    @property
    def num_timesteps(self) -> int:
        return int(self.sigmas.shape[0])

    @property
    def sigma_min(self) -> float:
        """The smallest sigma of the table (0.029167 on SD)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """The largest sigma of the table (14.614641 on SD, 1.0 for a flow)."""
        return float(self.sigmas[-1])


class DiscreteModelSampling(SigmaTable):
    """The discrete noise table of an SD-style model plus its prediction-type conversions.

    prediction: "eps" (SD1.x, SD2-base, SDXL), "v" (SD2-768, v-models; Salimans & Ho 2022) or "x0".
    zero_terminal_snr: apply `rescale_zero_terminal_snr` to the table.
    betas: an explicit beta table (float) instead of the scaled-linear one.
    """

    PREDICTIONS = ("eps", "v", "x0")

    def __init__(self, prediction: str = "eps", linear_start: float = 0.00085, linear_end: float = 0.012,
                 timesteps: int = 1000, zero_terminal_snr: bool = False, betas: Optional[torch.Tensor] = None):
        super().__init__()
        if prediction not in self.PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; expected one of {self.PREDICTIONS}")
        self.prediction = prediction
        self.zero_terminal_snr = bool(zero_terminal_snr)
        betas = sd_betas(linear_start, linear_end, timesteps) if betas is None else torch.as_tensor(
            betas, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        if zero_terminal_snr:
            alphas_cumprod = rescale_zero_terminal_snr(alphas_cumprod)
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.register_buffer("betas", betas.to(torch.float32), persistent=False)
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float32), persistent=False)
        self.register_buffer("sigmas", sigmas.to(torch.float32), persistent=False)
        self.register_buffer("log_sigmas", sigmas.log().to(torch.float32), persistent=False)

    # -- the table -------------------------------------------------------------------------------------------------
    def timestep(self, sigma: Number) -> torch.Tensor:
        """The discrete timestep index (as a float tensor shaped like sigma) whose sigma is nearest in log-sigma."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.to(self.log_sigmas.device, torch.float32).log()
        dists = (log_sigma.reshape(-1, 1) - self.log_sigmas.reshape(1, -1)).abs()
        index = dists.argmin(dim=1)
        return index.reshape(sigma.shape).to(torch.float32).to(sigma.device)

    def sigma(self, timestep: Number) -> torch.Tensor:
        """Sigma at a (possibly fractional) timestep: log-sigma interpolated linearly between table entries; t is
        clamped into [0, T−1]."""
        t = torch.as_tensor(timestep, dtype=torch.float32)
        device = t.device
        t = t.to(self.log_sigmas.device).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = t.ceil().long()
        w = t - low.to(t.dtype)
        log_sigma = (1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]
        return log_sigma.exp().to(device)

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at a fraction of the sampling process (conditioning timestep ranges): percent 0 → SIGMA_ABOVE_ALL
        (covers the very first step), 1 → 0.0, otherwise sigma(timestep (1 − percent)·(T − 1))."""
        percent = float(percent)
        if percent <= 0.0:
            return SIGMA_ABOVE_ALL
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * (self.num_timesteps - 1))))

    # -- model conversions -----------------------------------------------------------------------------------------
    def calculate_input(self, sigma: Number, x: torch.Tensor) -> torch.Tensor:
        """The network input c_in·x with c_in = 1/sqrt(σ² + 1) (the VP-scaled latent)."""
        sigma = broadcast_sigma(sigma, x)
        return x / (sigma ** 2 + 1.0).sqrt()

    def calculate_denoised(self, sigma: Number, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x0 estimate from the network output for the noisy (VE) input x:
        eps: x − σ·out;  v: x/(σ²+1) − out·σ/sqrt(σ²+1);  x0: out."""
        sigma = broadcast_sigma(sigma, model_output)
        if self.prediction == "eps":
            return x - model_output * sigma
        if self.prediction == "v":
            return x * (1.0 / (sigma ** 2 + 1.0)) - model_output * sigma / (sigma ** 2 + 1.0).sqrt()
        return model_output

    def noise_scaling(self, sigma: Number, noise: torch.Tensor, latent_image: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The initial sampler input: latent + noise·sqrt(1 + σ²) at full denoise (the VE marginal of pure noise
        whose VP image has unit variance), else latent + noise·σ."""
        sigma = broadcast_sigma(sigma, noise)
        scale = (1.0 + sigma ** 2).sqrt() if max_denoise else sigma
        return latent_image + noise * scale

    def inverse_noise_scaling(self, sigma: Number, latent: torch.Tensor) -> torch.Tensor:
        """The sampler output is already a clean latent for the discrete VE formulation."""
        return latent
