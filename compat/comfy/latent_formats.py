"""`comfy.latent_formats`: the latent formats of the families we sample (model_management/latent_formats.py)."""
from model_management.latent_formats import SD3, SD15, SDXL, Flux, LatentFormat  # noqa: F401
