"""`comfy.utils`: progress bars, tensor resizing and checkpoint loading for node packs.

ProgressBar reports through the running node's context (the scheduler's events, interrupt checks included).
load_torch_file never unpickles freely: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle
that would build arbitrary objects (DESIGN.md §8).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from compat import _report
from execution.context import current_context

PROGRESS_BAR_ENABLED = True


class ProgressBar:
    """`ProgressBar(total)`; `update(step)` adds, `update_absolute(value, total, preview)` sets. Each update is an
    interrupt point (it raises comfy.model_management.InterruptProcessingException when the job was interrupted);
    outside node execution it only counts."""

    def __init__(self, total: float, node_id: Optional[Any] = None) -> None:
        self.total = total
        self.current = 0
        self.node_id = node_id
        self._ctx = current_context()  # kept for updates made from worker threads

    def update_absolute(self, value: float, total: Optional[float] = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        _report.report(self.current, self.total, self.node_id, preview, fallback=self._ctx)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


# -- checkpoints ------------------------------------------------------------------------------------------------
def load_torch_file(ckpt: str, safe_load: bool = True, device: Any = None, return_metadata: bool = False) -> Any:
    """A state dict from `.safetensors` (with its metadata when `return_metadata`) or from a torch pickle of plain
    tensors (model_management.file_loading). `safe_load` is accepted for compatibility; loading is always safe."""
    from model_management.file_loading import load_state_dict

    device = "cpu" if device is None else str(torch.device(device))
    if not str(ckpt).lower().endswith((".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".pt2", ".pkl")):
        ckpt_path = str(ckpt)
        sd = torch.load(ckpt_path, map_location=device, weights_only=True)  # odd extension: still weights only
        return (sd, None) if return_metadata else sd
    sd, metadata = load_state_dict(str(ckpt), device=device, with_metadata=True)
    return (sd, metadata or None) if return_metadata else sd


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


def calculate_parameters(sd: dict, prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix) and hasattr(v, "nelement"))


# -- tensors --------------------------------------------------------------------------------------------------
from diffusion.image_ops import (bislerp, common_upscale, lanczos,  # noqa: E402,F401 -- re-exported
                                 repeat_to_batch_size)


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols
