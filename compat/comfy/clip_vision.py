"""`comfy.clip_vision` for node packs: `load(path)` -> CLIP_VISION (the engine's ClipVisionModel, through the model
manager when the engine is bound), `clip_preprocess`, and the output record `Output` (CLIP_VISION_OUTPUT)."""
from __future__ import annotations

from typing import Any

from compat import _runtime
from diffusion.vision.clip_vision import CLIP_MEAN, CLIP_STD, clip_preprocess  # noqa: F401 - packs import them
from model_management.model_objects import ClipVisionModel, ClipVisionOutput

Output = ClipVisionOutput


def load(ckpt_path: str) -> ClipVisionModel:
    from model_management.clip_vision_files import load_clip_vision  # noqa: PLC0415
    services = _runtime.state.services
    return load_clip_vision(str(ckpt_path), getattr(services, "models", None))


def load_clipvision_from_sd(sd: dict, prefix: str = "", convert_keys: bool = False) -> ClipVisionModel:
    """A CLIP_VISION from a state dict (keys under `prefix`; either layout)."""
    from diffusion.vision.clip_vision import ClipVisionEncoder  # noqa: PLC0415
    state = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)} if prefix else sd
    return ClipVisionModel(ClipVisionEncoder.from_state_dict(state), "state_dict")
