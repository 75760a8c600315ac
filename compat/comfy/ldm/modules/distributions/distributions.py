"""`comfy.ldm.modules.distributions.distributions`: the VAE encoder's diagonal Gaussian."""
from __future__ import annotations

import torch


class DiagonalGaussianDistribution:
    """Mean and log-variance halves of a VAE encoder's moments [B, 2C, H, W]."""

    def __init__(self, parameters: torch.Tensor, deterministic: bool = False) -> None:
        self.parameters = parameters
        self.mean, logvar = torch.chunk(parameters, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.deterministic = deterministic
        self.std = torch.zeros_like(self.mean) if deterministic else torch.exp(0.5 * self.logvar)
        self.var = self.std ** 2

    def sample(self, generator=None) -> torch.Tensor:
        noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean
