"""`comfy.sample` for node packs: noise from a seed and the one-call sampling functions KSampler nodes use.

Latents in and out are raw (unscaled) VAE latents, as on LATENT sockets.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import numpy as np  # noqa: F401 - some packs import numpy from here
import torch

from diffusion.sampling.ksampler import calculate_sigmas, prepare_noise as _prepare_noise, slice_sigmas
from nodes.sampling_objects import Guider


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Optional[List[int]] = None) -> torch.Tensor:
    """The seed's starting noise for a latent batch (`noise_inds`: the batch indices, as in LATENT's batch_index)."""
    return _prepare_noise(latent_image, seed, noise_inds)


prepare_noise_orig = prepare_noise


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with the wrong channel count (an empty latent of another family) resized to the model's."""
    channels = model.model.latent_format.latent_channels
    if latent_image.shape[1] != channels and torch.count_nonzero(latent_image) == 0:
        shape = list(latent_image.shape)
        shape[1] = channels
        return torch.zeros(shape, dtype=latent_image.dtype, device=latent_image.device)
    return latent_image


def sample(model: Any, noise: torch.Tensor, steps: int, cfg: float, sampler_name: str, scheduler: str,
           positive: Any, negative: Any, latent_image: torch.Tensor, denoise: float = 1.0,
           disable_noise: bool = False, start_step: Optional[int] = None, last_step: Optional[int] = None,
           force_full_denoise: bool = False, noise_mask: Optional[torch.Tensor] = None,
           sigmas: Optional[torch.Tensor] = None, callback: Optional[Callable] = None, disable_pbar: bool = False,
           seed: Optional[int] = None) -> torch.Tensor:
    """What KSampler does, on tensors: `noise` as prepared by prepare_noise (zeros when disable_noise)."""
    from comfy.samplers import ksampler
    if sigmas is None:
        sigmas = calculate_sigmas(model, scheduler, steps, denoise, sampler_name)
    sigmas = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
    if disable_noise:
        noise = torch.zeros_like(latent_image, dtype=torch.float32)
    return Guider(model, positive, negative, cfg).sample(noise, latent_image, ksampler(sampler_name), sigmas,
                                                         noise_mask, callback, disable_pbar, seed)


def sample_custom(model: Any, noise: torch.Tensor, cfg: float, sampler: Any, sigmas: torch.Tensor, positive: Any,
                  negative: Any, latent_image: torch.Tensor, noise_mask: Optional[torch.Tensor] = None,
                  callback: Optional[Callable] = None, disable_pbar: bool = False,
                  seed: Optional[int] = None) -> torch.Tensor:
    """What SamplerCustom does, on tensors."""
    return Guider(model, positive, negative, cfg).sample(noise, latent_image, sampler, sigmas, noise_mask, callback,
                                                         disable_pbar, seed)
