"""`comfy.sd` for V1 packs: load checkpoints, text encoders, UNets and VAEs into our model objects.

Packs call these to load models outside the loader nodes; the objects returned are the same MODEL, CLIP and VAE
objects our nodes pass around, so they plug into any built-in node.
"""
from __future__ import annotations

from typing import Any, List, Optional

from model_management.checkpoints import load_checkpoint, load_unet_file, load_vae_file
from model_management.model_objects import DiffusionModel, TextEncoderModel, VAEModel
from model_management.text_encoder_files import load_text_encoder_files
from model_management.embeddings import directory_finder

VAE = VAEModel
CLIP = TextEncoderModel
ModelPatcher = DiffusionModel


class CLIPType:
    STABLE_DIFFUSION = "stable_diffusion"
    SDXL = "sdxl"


def _finder(embedding_directory: Any):
    if not embedding_directory:
        return None
    dirs = embedding_directory if isinstance(embedding_directory, (list, tuple)) else [embedding_directory]
    return directory_finder(*dirs)


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, **kwargs: Any) -> tuple:
    """(model, clip, vae, clipvision) from a checkpoint file; clip vision is not part of SD checkpoints: None."""
    loaded = load_checkpoint(ckpt_path, want_model=output_model, want_clip=output_clip, want_vae=output_vae,
                             embeddings=_finder(embedding_directory))
    return loaded.model, loaded.clip, loaded.vae, None


def load_clip(ckpt_paths: List[str], embedding_directory: Any = None,
              clip_type: str = CLIPType.STABLE_DIFFUSION, model_options: Optional[dict] = None) -> TextEncoderModel:
    kind = "sdxl" if len(ckpt_paths) == 2 else "stable_diffusion"
    return load_text_encoder_files(list(ckpt_paths), kind, _finder(embedding_directory))


def load_diffusion_model(unet_path: str, model_options: Optional[dict] = None) -> DiffusionModel:
    return load_unet_file(unet_path)


load_unet = load_diffusion_model


def load_vae(vae_path: str) -> VAEModel:
    return load_vae_file(vae_path)


def load_lora_for_models(model: Any, clip: Any, lora: dict, strength_model: float, strength_clip: float) -> tuple:
    """(model, clip) clones with a LoRA state dict's patches recorded (either may be None), as LoraLoader does."""
    from model_management.lora_formats import parse_lora
    family = model.family.name if model is not None else clip.family_name
    unet_names = [n for n, _ in model.unet.named_parameters()] if model is not None else []
    text_names = [n for n, _ in clip.stack.named_parameters()] if clip is not None else []
    parsed = parse_lora(lora, unet_names, text_names, family)
    new_model = model.with_patches(parsed.unet_patches(strength_model)) if model is not None else None
    new_clip = clip.with_patches(parsed.text_patches(strength_clip)) if clip is not None else None
    return new_model, new_clip
