"""The Stable Diffusion VAE (AutoencoderKL) in the original LDM key layout, with tiled encode/decode."""
from diffusion.vae.config import (CHECKPOINT_PREFIX, VAEConfig, detect_vae_config, sd_vae_config, strip_prefix,
                                  tiny_vae_config)
from diffusion.vae.model import AutoencoderKL
from diffusion.vae.tiling import decode_tiled, encode_tiled, tile_spans

__all__ = ["CHECKPOINT_PREFIX", "VAEConfig", "detect_vae_config", "sd_vae_config", "strip_prefix", "tiny_vae_config",
           "AutoencoderKL", "decode_tiled", "encode_tiled", "tile_spans"]
