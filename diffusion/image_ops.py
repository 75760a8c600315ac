"""Resizing and batching of image and latent tensors ([B, C, H, W]): the one implementation that the image and
latent nodes, the samplers and the compat layer all use. Methods: nearest-exact, bilinear, area, bicubic, lanczos
(PIL, per image) and bislerp (spherical interpolation, kinder to latents)."""
from __future__ import annotations

import math

import torch


def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    if tensor.shape[dim] > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if tensor.shape[dim] < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = math.ceil(batch_size / tensor.shape[dim])
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def _kept_margin(length: int, keep_fraction: float) -> int:
    """Pixels cut from each side of an axis of `length` so that `keep_fraction` of it stays (rounded half to
    even, computed in float as the reference does, so both crop the same pixels)."""
    return round((length - length * keep_fraction) / 2)


def _center_crop(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The centred window of `samples` with the aspect ratio of `width x height` (one axis kept whole)."""
    src_h, src_w = samples.shape[-2:]
    src_aspect, dst_aspect = src_w / src_h, width / height
    cut_w = _kept_margin(src_w, dst_aspect / src_aspect) if src_aspect > dst_aspect else 0
    cut_h = _kept_margin(src_h, src_aspect / dst_aspect) if src_aspect < dst_aspect else 0
    return samples[..., cut_h:src_h - cut_h, cut_w:src_w - cut_w]


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


