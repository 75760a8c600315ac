"""`comfy.utils`: progress bars, tensor resizing and checkpoint loading for node packs.

ProgressBar reports through the running node's context (the scheduler's events, interrupt checks included).
load_torch_file never unpickles freely: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle
that would build arbitrary objects (DESIGN.md §8).
"""
from __future__ import annotations

import math
import pickle
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
    tensors. `safe_load` is accepted for compatibility; loading is always safe."""
    device = torch.device("cpu") if device is None else torch.device(device)
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open

        sd = {}
        with safe_open(ckpt, framework="pt", device=str(device)) as f:
            for key in f.keys():
                sd[key] = f.get_tensor(key)
            metadata = f.metadata() if return_metadata else None
    else:
        try:
            loaded = torch.load(ckpt, map_location=device, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise pickle.UnpicklingError(
                f"refused to load {ckpt}: it holds objects other than tensors and plain containers, which are "
                f"never unpickled (convert it to .safetensors). {exc}") from exc
        sd = _unwrap_state_dict(loaded)
    return (sd, metadata) if return_metadata else sd


def _unwrap_state_dict(loaded: Any) -> Any:
    if isinstance(loaded, dict):
        if "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
            return loaded["state_dict"]
        if len(loaded) == 1:
            only = next(iter(loaded.values()))
            if isinstance(only, dict):
                return only
    return loaded


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


def calculate_parameters(sd: dict, prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix) and hasattr(v, "nelement"))


# -- tensors --------------------------------------------------------------------------------------------------
def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / tensor.shape[dim])
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def _center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    old_w, old_h = samples.shape[-1], samples.shape[-2]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    return samples.narrow(-2, y, old_h - 2 * y).narrow(-1, x, old_w - 2 * x)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Lanczos resize through PIL, per image ([B,C,H,W], values assumed 0..1)."""
    import numpy as np
    from PIL import Image

    out = []
    for image in samples:
        array = np.clip(255.0 * image.movedim(0, -1).float().cpu().numpy(), 0, 255).astype(np.uint8)
        if array.shape[-1] == 1:
            array = array[..., 0]
        resized = np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS))
        tensor = torch.from_numpy(resized.astype(np.float32) / 255.0)
        out.append(tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of channel vectors (dim 1), magnitudes interpolated linearly."""
    a_norm, b_norm = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    a_unit, b_unit = a / a_norm.clamp_min(1e-12), b / b_norm.clamp_min(1e-12)
    dot = (a_unit * b_unit).sum(dim=1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    safe = sin_omega.abs() > 1e-6
    w_a = torch.where(safe, torch.sin((1 - t) * omega) / sin_omega.where(safe, torch.ones_like(sin_omega)), 1 - t)
    w_b = torch.where(safe, torch.sin(t * omega) / sin_omega.where(safe, torch.ones_like(sin_omega)), t)
    direction = w_a * a_unit + w_b * b_unit
    return direction * (a_norm * (1 - t) + b_norm * t)


def _bislerp_axis(samples: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    old = samples.shape[dim]
    if old == size:
        return samples
    coords = ((torch.arange(size, dtype=torch.float32) + 0.5) * (old / size) - 0.5).clamp(0, old - 1)
    lo = coords.floor().long()
    hi = (lo + 1).clamp(max=old - 1)
    t = (coords - lo.float()).to(samples.dtype)
    a, b = samples.index_select(dim, lo.to(samples.device)), samples.index_select(dim, hi.to(samples.device))
    shape = [1] * samples.ndim
    shape[dim] = size
    return _slerp(a, b, t.to(samples.device).view(shape))


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize that slerps channel vectors instead of averaging them (keeps latent magnitudes)."""
    dtype = samples.dtype
    out = _bislerp_axis(samples.float(), width, 3)
    return _bislerp_axis(out, height, 2).to(dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str,
                   crop: str = "disabled") -> torch.Tensor:
    """Resize `[B,C,H,W]` (or `[B,C,T,H,W]`) to `height x width` with nearest-exact, bilinear, area, bicubic,
    lanczos or bislerp; `crop="center"` first crops to the target aspect ratio."""
    if crop == "center":
        samples = _center_crop(samples, width, height)
    if samples.ndim == 5:  # video latents: resize each frame
        b, c, t, h, w = samples.shape
        flat = samples.movedim(2, 1).reshape(b * t, c, h, w)
        out = common_upscale(flat, width, height, upscale_method, "disabled")
        return out.reshape(b, t, c, height, width).movedim(1, 2)
    if upscale_method == "bislerp":
        return bislerp(samples, width, height)
    if upscale_method == "lanczos":
        return lanczos(samples, width, height)
    if upscale_method not in ("nearest-exact", "bilinear", "area", "bicubic", "nearest"):
        raise ValueError(f"unknown upscale method {upscale_method!r}")
    return torch.nn.functional.interpolate(samples, size=(height, width), mode=upscale_method)


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    rows = 1 if height <= tile_y else math.ceil((height - overlap) / (tile_y - overlap))
    cols = 1 if width <= tile_x else math.ceil((width - overlap) / (tile_x - overlap))
    return rows * cols
