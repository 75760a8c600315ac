"""`comfy.taesd.taesd`: TAESD, the tiny autoencoder (madebyollin) used for fast, good-looking sampling previews.

Its published layout: 3x3 convolutions, residual `Block`s of three convs, stride-2 convs to go down and nearest
upsampling to go up, 64 channels throughout; the decoder starts with a soft clamp (`3 * tanh(x / 3)`). Weight files
are `taesd_decoder.safetensors` / `taesdxl_decoder.safetensors` (and encoders) in models/vae_approx.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def _stage_down(width: int) -> list:
    return [conv(width, width, stride=2, bias=False), Block(width, width), Block(width, width), Block(width, width)]


def _stage_up(width: int) -> list:
    return [Block(width, width), Block(width, width), Block(width, width), nn.Upsample(scale_factor=2),
            conv(width, width, bias=False)]


def Encoder(latent_channels: int = 4) -> nn.Sequential:  # noqa: N802 - the published name
    """Image in [0, 1] -> latent, 8x smaller."""
    return nn.Sequential(conv(3, 64), Block(64, 64), *_stage_down(64), *_stage_down(64), *_stage_down(64),
                         conv(64, latent_channels))


def Decoder(latent_channels: int = 4) -> nn.Sequential:  # noqa: N802
    """Latent -> image in [0, 1], 8x larger."""
    return nn.Sequential(Clamp(), conv(latent_channels, 64), nn.ReLU(), *_stage_up(64), *_stage_up(64),
                         *_stage_up(64), Block(64, 64), conv(64, 3))


class TAESD(nn.Module):
    """Encoder and decoder; `vae_scale` / `vae_shift` map the diffusion model's latents to TAESD's."""
    latent_magnitude = 3
    latent_shift = 0.5

    def __init__(self, encoder_path: Optional[str] = None, decoder_path: Optional[str] = None,
                 latent_channels: int = 4):
        super().__init__()
        self.taesd_encoder = Encoder(latent_channels)
        self.taesd_decoder = Decoder(latent_channels)
        self.vae_scale = nn.Parameter(torch.tensor(1.0))
        self.vae_shift = nn.Parameter(torch.tensor(0.0))
        from model_management.file_loading import load_state_dict  # noqa: PLC0415 - safe loading only
        if encoder_path is not None:
            self.taesd_encoder.load_state_dict(load_state_dict(encoder_path), strict=True)
        if decoder_path is not None:
            self.taesd_decoder.load_state_dict(load_state_dict(decoder_path), strict=True)

    @staticmethod
    def scale_latents(x: torch.Tensor) -> torch.Tensor:
        """[-magnitude, magnitude] -> [0, 1]"""
        return x.div(2 * TAESD.latent_magnitude).add(TAESD.latent_shift).clamp(0, 1)

    @staticmethod
    def unscale_latents(x: torch.Tensor) -> torch.Tensor:
        return x.sub(TAESD.latent_shift).mul(2 * TAESD.latent_magnitude)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion-scaled latent -> image in [-1, 1]."""
        return self.taesd_decoder((x - self.vae_shift) * self.vae_scale).sub(0.5).mul(2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> diffusion-scaled latent."""
        return (self.taesd_encoder(x * 0.5 + 0.5) / self.vae_scale) + self.vae_shift
