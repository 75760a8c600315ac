"""Latent-diffusion UNet for SD1.x / SD2.x / SDXL in the LDM checkpoint layout, with config detection."""
from .config import (SDXL_TIME_ID_DIM, UNET_PREFIX, UNetConfig, detect_unet_config, sd15_config, sd21_config,
                     sdxl_base_config, sdxl_refiner_config, strip_unet_prefix, tiny_sd1_config, tiny_sd2_config,
                     tiny_sdxl_config, tiny_sdxl_refiner_config)
from .embeddings import sdxl_vector_input, timestep_embedding
from .loader import unet_from_state_dict
from .model import UNetModel

__all__ = [
    "SDXL_TIME_ID_DIM", "UNET_PREFIX", "UNetConfig", "UNetModel", "detect_unet_config", "sd15_config",
    "sd21_config", "sdxl_base_config", "sdxl_refiner_config", "sdxl_vector_input", "strip_unet_prefix",
    "timestep_embedding", "tiny_sd1_config", "tiny_sd2_config", "tiny_sdxl_config", "tiny_sdxl_refiner_config",
    "unet_from_state_dict",
]
