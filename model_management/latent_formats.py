"""Latent formats: how a family's VAE latents are scaled for the diffusion model and previewed.

A MODEL's `model.latent_format` (the ComfyUI face, patcher_face.py) is one of these; `comfy.latent_formats` re-exports
them under ComfyUI's class names. The numbers are the families' published constants: the latent scale factor and
the linear latent-to-RGB preview fit (diffusion/latent_preview.py holds the same fits for our own previews).
"""
from __future__ import annotations

from typing import List, Optional

import torch

from diffusion.latent_preview import RGB_FACTORS


class LatentFormat:
    """Raw VAE latents <-> what the diffusion model sees: `process_in` shifts and scales, `process_out` undoes
    it. Only the 16-channel VAEs (SD3, Flux) have a shift."""
    scale_factor: float = 1.0
    shift_factor: float = 0.0
    latent_channels: int = 4
    latent_dimensions: int = 2
    latent_rgb_factors: Optional[List[List[float]]] = None
    latent_rgb_factors_bias: Optional[List[float]] = None
    taesd_decoder_name: Optional[str] = None

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        return latent / self.scale_factor + self.shift_factor


class SD15(LatentFormat):
    """SD1.x / SD2.x: 4 channels, scale 0.18215."""
    scale_factor = 0.18215
    latent_rgb_factors = RGB_FACTORS["sd"][0]
    latent_rgb_factors_bias = RGB_FACTORS["sd"][1]
    taesd_decoder_name = "taesd_decoder"


class SDXL(LatentFormat):
    """SDXL (base and refiner): 4 channels, scale 0.13025."""
    scale_factor = 0.13025
    latent_rgb_factors = RGB_FACTORS["sdxl"][0]
    latent_rgb_factors_bias = RGB_FACTORS["sdxl"][1]
    taesd_decoder_name = "taesdxl_decoder"


class SD3(LatentFormat):
    """SD3.x: the 16-channel VAE, scale 1.5305 and shift 0.0609."""
    latent_channels = 16
    scale_factor = 1.5305
    shift_factor = 0.0609
    latent_rgb_factors = RGB_FACTORS["sd3"][0]
    latent_rgb_factors_bias = RGB_FACTORS["sd3"][1]
    taesd_decoder_name = "taesd3_decoder"


class Flux(LatentFormat):
    """Flux.1: the 16-channel VAE, scale 0.3611 and shift 0.1159."""
    latent_channels = 16
    scale_factor = 0.3611
    shift_factor = 0.1159
    latent_rgb_factors = RGB_FACTORS["flux"][0]
    latent_rgb_factors_bias = RGB_FACTORS["flux"][1]
    taesd_decoder_name = "taef1_decoder"


def for_family(name: str) -> LatentFormat:
    """The latent format of a model family ("sd1", "sd2", "sdxl", "sdxl_refiner", "sd3", "flux")."""
    if name == "sd3":
        return SD3()
    if name == "flux":
        return Flux()
    return SDXL() if name.startswith("sdxl") else SD15()
