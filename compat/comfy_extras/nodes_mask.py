"""`comfy_extras.nodes_mask`: the mask nodes, and `composite` (paste a [B, C, H, W] source into a destination)."""
from __future__ import annotations

from typing import Optional

import torch

from comfy_extras._lookup import node_class as __getattr__  # noqa: F401
from diffusion.image_ops import repeat_to_batch_size


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: Optional[torch.Tensor] = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """`source` blended into `destination` (in place, and returned) with its corner at pixel (x, y), positions
    counted in units of `multiplier` pixels per cell (8 for latents, 1 for images). The position is clamped to
    one source size before the destination's edge; parts outside the destination are dropped. `mask` ([H, W] or
    [B, H, W], any size) is resized to the source; 1 takes the source."""
    source = source.to(destination.device)
    if resize_source:
        source = torch.nn.functional.interpolate(source, size=tuple(destination.shape[-2:]), mode="bilinear")
    source = repeat_to_batch_size(source, destination.shape[0])
    src_h, src_w = source.shape[-2:]
    dst_h, dst_w = destination.shape[-2:]
    x = min(max(x, -src_w * multiplier), dst_w * multiplier)
    y = min(max(y, -src_h * multiplier), dst_h * multiplier)
    left, top = x // multiplier, y // multiplier
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = mask.to(destination.device).reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        weight = torch.nn.functional.interpolate(weight.float(), size=(src_h, src_w), mode="bilinear")
        weight = repeat_to_batch_size(weight, source.shape[0]).to(source.dtype)
    # the overlap, in source coordinates (s*) and destination coordinates (d*)
    s_top, s_left = max(0, -top), max(0, -left)
    d_top, d_left = max(0, top), max(0, left)
    rows = min(src_h - s_top, dst_h - d_top)
    cols = min(src_w - s_left, dst_w - d_left)
    if rows <= 0 or cols <= 0:
        return destination
    w = weight[:, :, s_top:s_top + rows, s_left:s_left + cols]
    region = destination[..., d_top:d_top + rows, d_left:d_left + cols]
    pasted = source[..., s_top:s_top + rows, s_left:s_left + cols]
    destination[..., d_top:d_top + rows, d_left:d_left + cols] = w * pasted + (1.0 - w) * region
    return destination
