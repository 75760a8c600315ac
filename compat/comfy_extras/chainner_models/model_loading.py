"""`comfy_extras.chainner_models.model_loading.load_state_dict`: an UPSCALE_MODEL from a state dict, by spandrel's
architecture detection (model_management/upscaling.py), as ComfyUI's deprecated helper does."""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tessera.compat")


def load_state_dict(state_dict: Any) -> Any:
    from model_management.upscaling import model_from_state_dict  # noqa: PLC0415
    log.warning("comfy_extras.chainner_models is deprecated (ComfyUI replaced it by spandrel): use "
                "comfy_extras.nodes_upscale_model.UpscaleModelLoader")
    return model_from_state_dict(state_dict)
