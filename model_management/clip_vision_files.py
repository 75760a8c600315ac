"""CLIP vision files -> CLIP_VISION objects: safetensors by memory map, pickles only as plain tensors."""
from __future__ import annotations

from typing import Any, Optional

from diffusion.vision.clip_vision import ClipVisionEncoder
from model_management.file_loading import load_state_dict


def load_clip_vision_file(path: str, num_heads: Optional[int] = None) -> ClipVisionEncoder:
    try:
        return ClipVisionEncoder.from_state_dict(load_state_dict(path), num_heads=num_heads)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_clip_vision(path: str, models: Any = None) -> Any:
    """A CLIP_VISION object for the file; through the model manager (`models`) when there is one, so the weights
    are read once, counted in the RAM budget and evicted like a checkpoint's."""
    from model_management.model_objects import ClipVisionModel  # noqa: PLC0415 - model_objects is above files
    if models is None:
        return ClipVisionModel(load_clip_vision_file(path), path)
    return ClipVisionModel(models.load_module("clip_vision", path, lambda: load_clip_vision_file(path)), path)
