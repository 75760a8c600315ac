"""The resize modes of Resize Image/Mask (ComfyUI's ResizeImageMaskNode): each picks a target size from the input's
own size and one or two numbers, then the image or mask is resampled with the chosen method (and, where the mode
allows it, centre-cropped to the target's aspect ratio first).

Sizes are rounded to the nearest pixel; a 0 width or height keeps the aspect ratio from the other; "scale to
multiple" rounds each side *down* to the multiple and covers it (scale up just enough, then crop the middle).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from diffusion.image_ops import common_upscale

SCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
CROP_METHODS = ["disabled", "center"]
RESIZE_TYPES = ["scale dimensions", "scale by multiplier", "scale longer dimension", "scale shorter dimension",
                "scale width", "scale height", "scale total pixels", "match size", "scale to multiple"]


def _resample(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    """An IMAGE [B, H, W, C] or MASK [B, H, W] resampled to width x height."""
    image = x.ndim == 4
    planes = x.movedim(-1, 1) if image else x.unsqueeze(1)
    out = common_upscale(planes, int(width), int(height), method, crop)
    return out.movedim(1, -1) if image else out.squeeze(1)


def _size(x: torch.Tensor) -> Tuple[int, int]:
    return int(x.shape[2]), int(x.shape[1])  # (width, height) of an image or a mask


def _fit_side(width: int, height: int, target: int, longer: bool) -> Tuple[int, int]:
    """(w, h) with the longer (or shorter) side at `target`, aspect ratio kept."""
    if width == height:
        return target, target
    wide = width > height
    if wide == longer:
        return target, round(height / width * target)
    return round(width / height * target), target


def resize(x: torch.Tensor, resize_type: str, options: dict, method: str,
           match: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`x` resized by `resize_type` with its `options` (width, height, crop, multiplier, longer_size,
    shorter_size, megapixels, multiple)."""
    if method not in SCALE_METHODS:
        raise ValueError(f"unknown scale_method {method!r} (one of {', '.join(SCALE_METHODS)})")
    width, height = _size(x)
    if resize_type in ("scale dimensions", "scale width", "scale height"):
        w = int(options.get("width", 0)) if resize_type != "scale height" else 0
        h = int(options.get("height", 0)) if resize_type != "scale width" else 0
        if w == 0 and h == 0:
            return x
        if w == 0:
            w = max(1, round(width * h / height))
        elif h == 0:
            h = max(1, round(height * w / width))
        crop = options.get("crop", "disabled") if resize_type == "scale dimensions" else "disabled"
        return _resample(x, w, h, method, crop)
    if resize_type == "scale by multiplier":
        m = float(options["multiplier"])
        return _resample(x, round(width * m), round(height * m), method)
    if resize_type in ("scale longer dimension", "scale shorter dimension"):
        key = "longer_size" if resize_type == "scale longer dimension" else "shorter_size"
        w, h = _fit_side(width, height, int(options[key]), resize_type == "scale longer dimension")
        return _resample(x, w, h, method)
    if resize_type == "scale total pixels":
        factor = math.sqrt(int(float(options["megapixels"]) * 1024 * 1024) / (width * height))
        return _resample(x, round(width * factor), round(height * factor), method)
    if resize_type == "match size":
        if match is None:
            raise ValueError("resize_type 'match size' needs the match input (an image or a mask)")
        w, h = _size(match)
        return _resample(x, w, h, method, options.get("crop", "center"))
    if resize_type == "scale to multiple":
        return _cover_multiple(x, int(options["multiple"]), method)
    raise ValueError(f"unknown resize_type {resize_type!r} (one of {', '.join(RESIZE_TYPES)})")


def _cover_multiple(x: torch.Tensor, multiple: int, method: str) -> torch.Tensor:
    width, height = _size(x)
    target_w, target_h = (width // multiple) * multiple, (height // multiple) * multiple
    if multiple <= 1 or target_w == 0 or target_h == 0 or (target_w, target_h) == (width, height):
        return x
    if target_w / width >= target_h / height:
        scaled_w, scaled_h = target_w, max(target_h, math.ceil(height * target_w / width))
    else:
        scaled_w, scaled_h = max(target_w, math.ceil(width * target_h / height)), target_h
    out = _resample(x, scaled_w, scaled_h, method)
    left, top = (scaled_w - target_w) // 2, (scaled_h - target_h) // 2
    return out[:, top:top + target_h, left:left + target_w]
