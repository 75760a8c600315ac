"""Latent toolbox: resize, composite, blend, batch, rotate, flip, crop and arithmetic on LATENTs.

Positions and sizes on widgets are in pixels (multiples of 8) and become latent cells by // 8. Every node keeps the
LATENT's extras consistent: a `noise_mask` (any resolution; the sampler resizes it) is cropped, rotated and flipped
with the samples, and sliced or repeated with the batch; `batch_index` (which noise draw each item gets) is sliced
with the batch, and offset on repeats so copies get fresh noise.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from diffusion.image_ops import common_upscale, repeat_to_batch_size
from nodes.declare import MAX_RESOLUTION, Boolean, Combo, Float, Int, Output, Socket, node

LATENT_FACTOR = 8
METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
METHOD_TIP = "How to resample: nearest-exact keeps values, bilinear/bicubic/area smooth, bislerp keeps magnitudes."


def latent_out(tooltip: str = "The resulting latents.") -> List[Output]:
    return [Output("LATENT", tooltip=tooltip)]


def samples_of(latent, name: str) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise ValueError(f"{name} is not a LATENT (a dict with a 'samples' tensor)")
    if latent["samples"].ndim < 4:
        raise ValueError(f"{name} has samples of shape {list(latent['samples'].shape)}; expected [B, C, H, W]")
    return latent["samples"]


def mask4(mask: torch.Tensor) -> torch.Tensor:
    """A noise mask ([H,W], [B,H,W] or [B,1,H,W]) as [B, 1, H, W]."""
    return mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])


def mask_region(mask: torch.Tensor, latent_hw: Tuple[int, int], top: int, left: int, h: int, w: int) -> torch.Tensor:
    """The part of a noise mask (at its own resolution) under latent cells [top:top+h, left:left+w]."""
    mask = mask4(mask)
    sy, sx = mask.shape[-2] / latent_hw[0], mask.shape[-1] / latent_hw[1]
    y0, x0 = round(top * sy), round(left * sx)
    y1, x1 = max(y0 + 1, round((top + h) * sy)), max(x0 + 1, round((left + w) * sx))
    return mask[:, :, y0:y1, x0:x1]


def match_latent(other: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`other` resized (bilinear, centre crop to the aspect) and batched like `target`, for element-wise maths."""
    if other.shape[-2:] != target.shape[-2:]:
        other = common_upscale(other, target.shape[-1], target.shape[-2], "bilinear", "center")
    return repeat_to_batch_size(other, target.shape[0])


def _batch_slice(t: torch.Tensor, start: int, length: int, batch: int) -> torch.Tensor:
    """Items start..start+length of a tensor that belongs to a batch of `batch` (one item = shared by all)."""
    if t.shape[0] == 1:
        return t.clone()
    return repeat_to_batch_size(t, batch)[start:start + length].clone()


# -- resize -------------------------------------------------------------------------------------------------------

def _resized(latent: dict, width: int, height: int, method: str, crop: str = "disabled") -> dict:
    """A LATENT resized to width x height latent cells; its noise mask follows (bilinear, same crop)."""
    samples = latent["samples"]
    out = dict(latent)
    out["samples"] = common_upscale(samples, width, height, method, crop)
    if latent.get("noise_mask") is not None:
        out["noise_mask"] = common_upscale(mask4(latent["noise_mask"]).float(), width, height, "bilinear", crop)
    return out


@node(category="latent", display_name="Upscale Latent", outputs=latent_out("The resized latents."))
class LatentUpscale:
    """Resize latents to a pixel size. With width or height 0 the other side follows the aspect ratio; both 0 keeps
    the size. Resample the result (hires fix) since resized latents look soft when decoded as they are."""
    samples = Socket("LATENT", tooltip="The latents to resize.")
    upscale_method = Combo(METHODS, tooltip=METHOD_TIP)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=8, tooltip="Target width in pixels (0: keep the aspect).")
    height = Int(512, min=0, max=MAX_RESOLUTION, step=8, tooltip="Target height in pixels (0: keep the aspect).")
    crop = Combo(["disabled", "center"], tooltip="center: crop to the target aspect ratio first instead of "
                                                  "stretching.")

    def run(self, ctx, samples, upscale_method, width, height, crop="disabled"):
        latent = samples_of(samples, "samples")
        if width == 0 and height == 0:
            return (dict(samples),)
        h, w = latent.shape[-2], latent.shape[-1]
        if width == 0:
            height = max(64, height)
            width = max(64, round(w * height / h))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(h * width / w))
        else:
            width, height = max(64, width), max(64, height)
        return (_resized(samples, width // LATENT_FACTOR, height // LATENT_FACTOR, upscale_method, crop),)


@node(category="latent", display_name="Upscale Latent By", outputs=latent_out("The resized latents."))
class LatentUpscaleBy:
    """Resize latents by a factor (each side rounded to whole latent cells)."""
    samples = Socket("LATENT", tooltip="The latents to resize.")
    upscale_method = Combo(METHODS, tooltip=METHOD_TIP)
    scale_by = Float(1.5, min=0.01, max=8.0, step=0.01, tooltip="The factor for both sides.")

    def run(self, ctx, samples, upscale_method, scale_by):
        latent = samples_of(samples, "samples")
        width = max(1, round(latent.shape[-1] * scale_by))
        height = max(1, round(latent.shape[-2] * scale_by))
        return (_resized(samples, width, height, upscale_method),)


# -- composite ----------------------------------------------------------------------------------------------------

def _edge_ramp(size: int, feather: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D weights: rising (i+1)/feather over the first cells and falling symmetrically over the last ones."""
    i = torch.arange(size, dtype=torch.float32)
    ramp = torch.ones(size)
    if feather > 0 and fade_start:
        ramp = ramp * ((i + 1) / feather).clamp(max=1.0)
    if feather > 0 and fade_end:
        ramp = ramp * ((size - i) / feather).clamp(max=1.0)
    return ramp


@node(category="latent", display_name="Latent Composite", outputs=latent_out("samples_to with samples_from pasted."))
class LatentComposite:
    """Paste one latent onto another at a pixel position, optionally with feathered edges so the seam blends."""
    samples_to = Socket("LATENT", tooltip="The background latents.")
    samples_from = Socket("LATENT", tooltip="The latents to paste (cut off where they leave the background).")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Left edge of the paste, in pixels.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Top edge of the paste, in pixels.")
    feather = Int(0, min=0, max=MAX_RESOLUTION, step=8,
                  tooltip="Width in pixels of a linear fade at the pasted edges that lie inside the background.")

    def run(self, ctx, samples_to, samples_from, x, y, feather=0):
        to = samples_of(samples_to, "samples_to")
        src = samples_of(samples_from, "samples_from")
        left, top, fade = x // LATENT_FACTOR, y // LATENT_FACTOR, feather // LATENT_FACTOR
        out = dict(samples_to)
        result = to.clone()
        h, w = min(src.shape[-2], to.shape[-2] - top), min(src.shape[-1], to.shape[-1] - left)
        if h > 0 and w > 0:
            patch = repeat_to_batch_size(src[..., :h, :w], to.shape[0]).to(to)
            rows = _edge_ramp(h, fade, top > 0, top + h < to.shape[-2])
            cols = _edge_ramp(w, fade, left > 0, left + w < to.shape[-1])
            weight = (rows[:, None] * cols[None, :]).to(to)
            region = result[..., top:top + h, left:left + w]
            result[..., top:top + h, left:left + w] = patch * weight + region * (1.0 - weight)
        out["samples"] = result
        return (out,)


@node(category="latent", outputs=latent_out("destination with source pasted through the mask."))
class LatentCompositeMasked:
    """Paste source onto destination at a pixel position, through a mask (1 = source, 0 = destination)."""
    destination = Socket("LATENT", tooltip="The background latents.")
    source = Socket("LATENT", tooltip="The latents to paste.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Left edge of the paste, in pixels.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Top edge of the paste, in pixels.")
    resize_source = Boolean(False, tooltip="Resize source to the destination's size first (bilinear).")
    mask = Socket("MASK", optional=True, tooltip="How much of source to use, stretched over the source (any "
                                                  "resolution); none pastes source fully.")

    def run(self, ctx, destination, source, x, y, resize_source=False, mask=None):
        dest = samples_of(destination, "destination")
        src = samples_of(source, "source").to(dest)
        if resize_source:
            src = F.interpolate(src, size=dest.shape[-2:], mode="bilinear", align_corners=False)
        src = repeat_to_batch_size(src, dest.shape[0])
        left, top = x // LATENT_FACTOR, y // LATENT_FACTOR
        h, w = min(src.shape[-2], dest.shape[-2] - top), min(src.shape[-1], dest.shape[-1] - left)
        result = dest.clone()
        if h > 0 and w > 0:
            if mask is None:
                weight = torch.ones_like(src[:, :1])
            else:
                if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4):
                    raise ValueError("mask must be a MASK [B, H, W]")
                weight = F.interpolate(mask4(mask).float(), size=src.shape[-2:], mode="bilinear",
                                       align_corners=False)
                weight = repeat_to_batch_size(weight, dest.shape[0]).to(dest)
            weight = weight[..., :h, :w]
            region = result[..., top:top + h, left:left + w]
            result[..., top:top + h, left:left + w] = src[..., :h, :w] * weight + region * (1.0 - weight)
        out = dict(destination)
        out["samples"] = result
        return (out,)


@node(category="_for_testing", display_name="Latent Blend", outputs=latent_out("The blended latents."))
class LatentBlend:
    """Mix two latents: blend_factor of the first plus (1 - blend_factor) of the second (resized to the first)."""
    samples1 = Socket("LATENT", tooltip="The first latents (they set the size).")
    samples2 = Socket("LATENT", tooltip="The second latents.")
    blend_factor = Float(0.5, min=0, max=1, step=0.01, tooltip="Weight of the first latents.")

    def run(self, ctx, samples1, samples2, blend_factor):
        a = samples_of(samples1, "samples1")
        b = match_latent(samples_of(samples2, "samples2"), a).to(a)
        out = dict(samples1)
        out["samples"] = a * blend_factor + b * (1.0 - blend_factor)
        return (out,)


# -- batches ------------------------------------------------------------------------------------------------------

@node(category="latent/batch", display_name="Latent From Batch", outputs=latent_out("The picked latents."))
class LatentFromBatch:
    """Pick some latents out of a batch. They remember their positions in it (batch_index), which pick their seed
    noise, so a latent picked from a batch gets the same noise however it was picked."""
    samples = Socket("LATENT", tooltip="The batch.")
    batch_index = Int(0, min=0, max=63, step=None,
                      tooltip="The first item to take (0-based; past the end takes the last).")
    length = Int(1, min=1, max=64, step=None, tooltip="How many items to take (fewer if the batch ends first).")

    def run(self, ctx, samples, batch_index, length):
        latent = samples_of(samples, "samples")
        batch = latent.shape[0]
        start = min(batch - 1, batch_index)
        length = min(batch - start, length)
        out = dict(samples)
        out["samples"] = latent[start:start + length].clone()
        if samples.get("noise_mask") is not None:
            out["noise_mask"] = _batch_slice(mask4(samples["noise_mask"]), start, length, batch)
        indices = samples.get("batch_index") or list(range(batch))
        out["batch_index"] = list(indices[start:start + length])
        return (out,)


@node(category="latent/batch", display_name="Repeat Latent Batch", outputs=latent_out("The repeated batch."))
class RepeatLatentBatch:
    """Repeat a batch of latents. Copies get their own noise: a source batch_index is continued past its range."""
    samples = Socket("LATENT", tooltip="The batch to repeat.")
    amount = Int(1, min=1, max=64, step=None, tooltip="How many times to repeat it.")

    def run(self, ctx, samples, amount):
        latent = samples_of(samples, "samples")
        out = dict(samples)
        out["samples"] = latent.repeat((amount,) + (1,) * (latent.ndim - 1))
        mask = samples.get("noise_mask")
        if mask is not None and mask4(mask).shape[0] > 1:
            mask = repeat_to_batch_size(mask4(mask), latent.shape[0])
            out["noise_mask"] = mask.repeat(amount, 1, 1, 1)
        indices = samples.get("batch_index")
        if indices:
            span = max(indices) - min(indices) + 1
            out["batch_index"] = [i + copy * span for copy in range(amount) for i in indices]
        return (out,)


def _split(latent: dict) -> list:
    """One LATENT per item: (samples [1,...], mask [1,1,h,w] or None, batch index)."""
    samples = samples_of(latent, "latents")
    batch = samples.shape[0]
    mask = latent.get("noise_mask")
    mask = repeat_to_batch_size(mask4(mask), batch) if mask is not None else None
    indices = latent.get("batch_index") or list(range(batch))
    return [(samples[i:i + 1], None if mask is None else mask[i:i + 1], indices[i]) for i in range(batch)]


def _join(items: list) -> dict:
    samples = torch.cat([s for s, _, _ in items])
    out = {"samples": samples, "batch_index": [index for _, _, index in items]}
    if any(m is not None for _, m, _ in items):
        size = next(m for _, m, _ in items if m is not None).shape[-2:]
        masks = [torch.ones(1, 1, *size) if m is None else
                 F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False) for _, m, _ in items]
        out["noise_mask"] = torch.cat(masks)
    return out


@node(category="latent/batch", display_name="Rebatch Latents", input_is_list=True,
      outputs=[Output("LATENT", tooltip="The latents regrouped into batches of batch_size (a list).",
                      is_list=True)])
class RebatchLatents:
    """Regroup a list of latent batches into batches of a chosen size, e.g. to sample many latents a few at a
    time. Latents of different sizes never share a batch; missing noise masks become all-ones."""
    latents = Socket("LATENT", tooltip="The latent batches (a list; one batch works too).")
    batch_size = Int(1, min=1, max=4096, step=None, tooltip="How many latents per output batch.")

    def run(self, ctx, latents, batch_size):
        size = batch_size[0] if isinstance(batch_size, list) else batch_size
        groups: List[list] = []
        for latent in latents if isinstance(latents, list) else [latents]:
            for item in _split(latent):
                last = groups[-1] if groups else None
                if last is None or len(last) >= size or last[0][0].shape[1:] != item[0].shape[1:]:
                    groups.append([item])
                else:
                    last.append(item)
        return ([_join(group) for group in groups],)


# -- transforms ---------------------------------------------------------------------------------------------------

def _transformed(latent: dict, fn) -> dict:
    out = dict(latent)
    out["samples"] = fn(latent["samples"])
    if latent.get("noise_mask") is not None:
        out["noise_mask"] = fn(mask4(latent["noise_mask"]))
    return out


@node(category="latent/transform", display_name="Rotate Latent", outputs=latent_out("The rotated latents."))
class LatentRotate:
    """Rotate latents clockwise by a multiple of 90 degrees (the noise mask turns with them)."""
    samples = Socket("LATENT", tooltip="The latents to rotate.")
    rotation = Combo(["none", "90 degrees", "180 degrees", "270 degrees"], tooltip="Clockwise rotation.")

    def run(self, ctx, samples, rotation):
        samples_of(samples, "samples")
        turns = {"none": 0, "90 degrees": 1, "180 degrees": 2, "270 degrees": 3}[rotation]
        # rot90 over (W, H) turns the picture clockwise: the top-left corner goes to the top right.
        return (_transformed(samples, lambda t: torch.rot90(t, turns, dims=(-1, -2)).contiguous()),)


@node(category="latent/transform", display_name="Flip Latent", outputs=latent_out("The flipped latents."))
class LatentFlip:
    """Mirror latents (the noise mask is mirrored with them)."""
    samples = Socket("LATENT", tooltip="The latents to flip.")
    flip_method = Combo(["x-axis: vertically", "y-axis: horizontally"],
                        tooltip="Across the x-axis (upside down) or across the y-axis (left-right mirror).")

    def run(self, ctx, samples, flip_method):
        samples_of(samples, "samples")
        dim = -2 if flip_method.startswith("x-axis") else -1
        return (_transformed(samples, lambda t: torch.flip(t, dims=(dim,))),)


@node(category="latent/transform", display_name="Crop Latent", outputs=latent_out("The cropped latents."))
class LatentCrop:
    """Cut a rectangle out of latents (pixel units; the noise mask is cropped with them). A start past the edge is
    moved back so at least 8 latent cells remain."""
    samples = Socket("LATENT", tooltip="The latents to crop.")
    width = Int(512, min=64, max=MAX_RESOLUTION, step=8, tooltip="Width of the crop in pixels.")
    height = Int(512, min=64, max=MAX_RESOLUTION, step=8, tooltip="Height of the crop in pixels.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Left edge of the crop in pixels.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Top edge of the crop in pixels.")

    def run(self, ctx, samples, width, height, x, y):
        latent = samples_of(samples, "samples")
        H, W = latent.shape[-2], latent.shape[-1]
        left = max(0, min(x // LATENT_FACTOR, W - 8))
        top = max(0, min(y // LATENT_FACTOR, H - 8))
        h, w = min(height // LATENT_FACTOR, H - top), min(width // LATENT_FACTOR, W - left)
        out = dict(samples)
        out["samples"] = latent[..., top:top + h, left:left + w].clone()
        if samples.get("noise_mask") is not None:
            out["noise_mask"] = mask_region(samples["noise_mask"], (H, W), top, left, h, w).clone()
        return (out,)


# -- arithmetic ---------------------------------------------------------------------------------------------------

def _combined(samples1: dict, samples2: dict, fn) -> Tuple[dict]:
    a = samples_of(samples1, "samples1")
    b = match_latent(samples_of(samples2, "samples2"), a).to(a)
    out = dict(samples1)
    out["samples"] = fn(a, b)
    return (out,)


@node(category="latent/advanced", outputs=latent_out("samples1 + samples2."))
class LatentAdd:
    """Add two latents element by element (the second is resized and batched to match the first)."""
    samples1 = Socket("LATENT", tooltip="The first latents (they set the size).")
    samples2 = Socket("LATENT", tooltip="The latents to add.")

    def run(self, ctx, samples1, samples2):
        return _combined(samples1, samples2, lambda a, b: a + b)


@node(category="latent/advanced", outputs=latent_out("samples1 - samples2."))
class LatentSubtract:
    """Subtract one latent from another element by element (the second is resized and batched to the first)."""
    samples1 = Socket("LATENT", tooltip="The latents to subtract from (they set the size).")
    samples2 = Socket("LATENT", tooltip="The latents to subtract.")

    def run(self, ctx, samples1, samples2):
        return _combined(samples1, samples2, lambda a, b: a - b)


@node(category="latent/advanced", outputs=latent_out("samples x multiplier."))
class LatentMultiply:
    """Scale latents by a number."""
    samples = Socket("LATENT", tooltip="The latents to scale.")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="The factor.")

    def run(self, ctx, samples, multiplier):
        out = dict(samples)
        out["samples"] = samples_of(samples, "samples") * multiplier
        return (out,)


def interpolate_vectors(a: torch.Tensor, b: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per latent cell: the channel vectors' directions mixed and renormalised, their lengths mixed linearly
    (ratio of a); keeps the magnitudes a plain average would shrink."""
    norm_a, norm_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    mixed = (a / norm_a.clamp_min(1e-12)) * ratio + (b / norm_b.clamp_min(1e-12)) * (1.0 - ratio)
    direction = mixed / mixed.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return direction * (norm_a * ratio + norm_b * (1.0 - ratio))


@node(category="latent/advanced", outputs=latent_out("The interpolated latents."))
class LatentInterpolate:
    """Interpolate between two latents, keeping their magnitudes (ratio 1 gives the first, 0 the second)."""
    samples1 = Socket("LATENT", tooltip="The first latents (they set the size).")
    samples2 = Socket("LATENT", tooltip="The second latents.")
    ratio = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Share of the first latents.")

    def run(self, ctx, samples1, samples2, ratio):
        return _combined(samples1, samples2, lambda a, b: interpolate_vectors(a, b, ratio))


NODES = [LatentUpscale, LatentUpscaleBy, LatentComposite, LatentCompositeMasked, LatentBlend, LatentFromBatch,
         RepeatLatentBatch, RebatchLatents, LatentRotate, LatentFlip, LatentCrop, LatentAdd, LatentSubtract,
         LatentMultiply, LatentInterpolate]
