"""ImageStitch: two image batches side by side or stacked, with an optional coloured gap. IMAGE is float32
[B, H, W, C] in 0..1.

As the reference node does: a shorter batch is extended with copies of its last image; with `match_image_size`
image2 is resized (lanczos, aspect kept) to image1's height (left/right) or width (up/down), otherwise the smaller
one is padded, centred, in the gap colour when it is black or white and in black otherwise; an RGB image stitched
to an RGBA one gains an opaque alpha; the gap is rounded up to an even width.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from diffusion.image_ops import common_upscale
from nodes.declare import Boolean, Combo, Int, Output, Socket, node

DIRECTIONS = ["right", "down", "left", "up"]
SPACING_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "red": (1.0, 0.0, 0.0),
                  "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _same_batch(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    size = max(a.shape[0], b.shape[0])

    def extend(x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[0] == size else torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])
    return extend(a), extend(b)


def _pad_centred(x: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """`x` padded along `dim` (1 = height, 2 = width) to `size`, the extra split top/left-first."""
    missing = size - x.shape[dim]
    if missing <= 0:
        return x
    before = missing // 2
    pads = [0, 0, 0, 0, 0, 0]  # torch's order: channels, width, height (each before, after)
    index = 2 if dim == 2 else 4
    pads[index], pads[index + 1] = before, missing - before
    return torch.nn.functional.pad(x, pads[:index + 2], mode="constant", value=value)


def _with_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[-1] >= channels:
        return x
    return torch.cat([x, x.new_ones(*x.shape[:-1], channels - x.shape[-1])], dim=-1)


def stitch_images(image1: torch.Tensor, image2: Optional[torch.Tensor], direction: str = "right",
                  match_image_size: bool = True, spacing_width: int = 0,
                  spacing_color: str = "white") -> torch.Tensor:
    if image2 is None:
        return image1
    if direction not in DIRECTIONS:
        raise ValueError(f"ImageStitch: direction must be one of {DIRECTIONS}, got {direction!r}")
    if spacing_color not in SPACING_COLORS:
        raise ValueError(f"ImageStitch: spacing_color must be one of {list(SPACING_COLORS)}, got {spacing_color!r}")
    sideways = direction in ("left", "right")
    along, across = (2, 1) if sideways else (1, 2)  # the dim images join along, and the one they must share
    image1, image2 = _same_batch(image1, image2)
    color = SPACING_COLORS[spacing_color]
    if match_image_size:
        h1, w1, h2, w2 = image1.shape[1], image1.shape[2], image2.shape[1], image2.shape[2]
        width, height = (int(h1 * (w2 / h2)), h1) if sideways else (w1, int(w1 / (w2 / h2)))
        image2 = common_upscale(image2.movedim(-1, 1), width, height, "lanczos", "disabled").movedim(1, -1)
    else:
        fill = color[0] if spacing_color in ("white", "black") else 0.0
        size = max(image1.shape[across], image2.shape[across])
        image1, image2 = _pad_centred(image1, across, size, fill), _pad_centred(image2, across, size, fill)
    channels = max(image1.shape[-1], image2.shape[-1])
    image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
    parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
    if spacing_width > 0:
        gap = spacing_width + spacing_width % 2
        shape = [image1.shape[0], 0, 0, channels]
        shape[along], shape[across] = gap, max(image1.shape[across], image2.shape[across])
        spacing = image1.new_zeros(shape)
        for c, value in enumerate(color[:channels]):
            spacing[..., c] = value
        if channels == 4:
            spacing[..., 3] = 1.0
        parts.insert(1, spacing)
    return torch.cat(parts, dim=along)


@node(category="image/transform", display_name="Stitch Images",
      outputs=[Output("IMAGE", tooltip="The stitched images.")])
class ImageStitch:
    """Stitch image2 to image1 in a direction, with an optional gap; without image2, image1 unchanged."""
    image1 = Socket("IMAGE", tooltip="The first images.")
    direction = Combo(DIRECTIONS, tooltip="Where image2 goes relative to image1.")
    match_image_size = Boolean(True, tooltip="Resize image2 to image1's height (left/right) or width (up/down), "
                                             "keeping its aspect ratio; off pads the smaller one instead.")
    spacing_width = Int(0, min=0, max=1024, step=2, tooltip="Width of the gap between the images (even).")
    spacing_color = Combo(list(SPACING_COLORS), tooltip="Colour of the gap.")
    image2 = Socket("IMAGE", optional=True, tooltip="The images to stitch on; none returns image1.")

    def run(self, ctx, image1, direction, match_image_size, spacing_width, spacing_color, image2=None):
        return (stitch_images(image1, image2, direction, match_image_size, spacing_width, spacing_color),)


NODES = [ImageStitch]
