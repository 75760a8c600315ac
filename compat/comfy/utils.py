"""`comfy.utils`: progress bars, tensor resizing and checkpoint loading for node packs.

ProgressBar reports through the running node's context (the scheduler's events, interrupt checks included).
load_torch_file never unpickles freely: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle
that would build arbitrary objects (docs/architecture.md §8).
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
        """Set the progress to `value` (never past the total, which `total` replaces when given)."""
        self.total = self.total if total is None else total
        self.current = min(value, self.total)
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
    """Rename keys by prefix, `{old_prefix: new_prefix}`, prefixes applied in order. Renamed entries move out of
    `state_dict`; they land in a new dict (`filter_keys`: only the renamed ones are returned) or back in
    `state_dict` itself, which is then returned."""
    target = {} if filter_keys else state_dict
    for old_prefix, new_prefix in replace_prefix.items():
        matching = [key for key in state_dict if key.startswith(old_prefix)]
        moved = {new_prefix + key[len(old_prefix):]: state_dict.pop(key) for key in matching}
        target.update(moved)
    return target


def save_torch_file(sd: dict, ckpt: str, metadata: Optional[dict] = None) -> None:
    """Write a state dict as .safetensors (tensors made contiguous; metadata values must be strings)."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt), metadata=metadata)


def weight_dtype(sd: dict, prefix: str = "") -> Optional[torch.dtype]:
    """The dtype holding the most parameters among the tensors under `prefix`."""
    counts: dict = {}
    for key, value in sd.items():
        if key.startswith(prefix) and hasattr(value, "dtype"):
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.get) if counts else None


def state_dict_key_replace(state_dict: dict, keys_to_replace: dict) -> dict:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def get_attr(obj: Any, attr: str) -> Any:
    """The attribute at a dotted path (ModuleList indices as plain names)."""
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    """Set the attribute at a dotted path; returns the previous value."""
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: torch.Tensor) -> Any:
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def calculate_parameters(sd: dict, prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix) and hasattr(v, "nelement"))


# -- tensors --------------------------------------------------------------------------------------------------
from diffusion.image_ops import (bislerp, common_upscale, lanczos,  # noqa: E402,F401 -- re-exported
                                 repeat_to_batch_size)


def _tiles_along(length: int, tile: int, overlap: int) -> int:
    """Tiles of `tile` pixels, each starting `tile - overlap` after the previous, needed to cover `length`."""
    beyond_first = max(0, length - tile)
    return 1 + -(-beyond_first // (tile - overlap))


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    """How many tiles a tiled pass over `width x height` makes (the progress bar's total)."""
    return _tiles_along(width, tile_x, overlap) * _tiles_along(height, tile_y, overlap)
