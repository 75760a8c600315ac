"""Mask nodes: convert between masks and images, make, invert, crop, combine, feather, grow and threshold masks.
MASK is float32 [B, H, W] in 0..1 (an unbatched [H, W] mask is accepted everywhere and treated as a batch of 1)."""
from __future__ import annotations

import torch

from nodes.declare import MAX_RESOLUTION, Boolean, Combo, Float, Int, Output, Socket, node


def mask_batch(mask, name: str = "mask") -> torch.Tensor:
    """`mask` as float [B, H, W]: [H, W] gains a batch axis, [B, 1, H, W] loses its channel axis."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a MASK tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    elif mask.ndim == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"{name} must be a MASK of shape [batch, height, width] or [height, width], "
                         f"got {list(mask.shape)}")
    return mask.float()


def _check_image(image, name: str = "image") -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE tensor [batch, height, width, channels], got {shape}")
    return image


def crop_region(height: int, width: int, x: int, y: int, name: str) -> None:
    """Raise a clear error when the corner (x, y) lies outside a height x width `name`."""
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"{name} is {width}x{height} but x={x}, y={y} lies outside it "
                         f"(x must be below {width} and y below {height})")


@node(category="mask", display_name="Convert Mask to Image",
      outputs=[Output("IMAGE", tooltip="A grey image: each RGB channel holds the mask value.")])
class MaskToImage:
    """Show a mask as a greyscale image (for previews, saving, or image nodes)."""
    mask = Socket("MASK", tooltip="The mask to convert.")

    def run(self, ctx, mask):
        mask = mask_batch(mask)
        return (mask.unsqueeze(-1).expand(*mask.shape, 3).contiguous(),)


@node(category="mask", display_name="Convert Image to Mask",
      outputs=[Output("MASK", tooltip="The chosen channel as a mask.")])
class ImageToMask:
    """Use one channel of an image as a mask. An image without that channel (e.g. 'alpha' of an RGB image, as
    LoadImage gives; its alpha is LoadImage's MASK output) is an error, as in the reference."""
    image = Socket("IMAGE", tooltip="The image to take the channel from.")
    channel = Combo(["red", "green", "blue", "alpha"], tooltip="Which channel becomes the mask.")

    def run(self, ctx, image, channel):
        image = _check_image(image)
        index = ["red", "green", "blue", "alpha"].index(channel)
        if index >= image.shape[-1]:
            hint = " (LoadImage gives the alpha channel as its MASK output)" if channel == "alpha" else ""
            raise ValueError(f"image has {image.shape[-1]} channel(s), so it has no {channel} channel{hint}")
        return (image[..., index].float().clone(),)


@node(category="mask", outputs=[Output("MASK", tooltip="1 where the pixel has exactly the colour, else 0.")])
class ImageColorToMask:
    """Mask the pixels of one exact colour (compared at 8 bits per channel)."""
    image = Socket("IMAGE", tooltip="The image to search.")
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="number", tooltip="The colour to select, as 0xRRGGBB.")

    def run(self, ctx, image, color):
        image = _check_image(image)
        if image.shape[-1] < 3:
            raise ValueError(f"image needs 3 colour channels, it has {image.shape[-1]}")
        rgb = (image[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.int64)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        return ((packed == int(color)).float(),)


@node(category="mask", outputs=[Output("MASK", tooltip="A 1 x height x width mask of one value.")])
class SolidMask:
    """A mask with the same value everywhere."""
    value = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="The value of every pixel.")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width in pixels.")
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height in pixels.")

    def run(self, ctx, value, width, height):
        return (torch.full((1, height, width), float(value), dtype=torch.float32),)


@node(category="mask", outputs=[Output("MASK", tooltip="1 - mask.")])
class InvertMask:
    """Swap the masked and unmasked areas."""
    mask = Socket("MASK", tooltip="The mask to invert.")

    def run(self, ctx, mask):
        return (1.0 - mask_batch(mask),)


@node(category="mask", outputs=[Output("MASK", tooltip="The cropped region of the mask.")])
class CropMask:
    """Cut a rectangle out of a mask. A rectangle running past the mask's edge stops at the edge."""
    mask = Socket("MASK", tooltip="The mask to crop.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Left edge of the rectangle.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Top edge of the rectangle.")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width of the rectangle.")
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height of the rectangle.")

    def run(self, ctx, mask, x, y, width, height):
        mask = mask_batch(mask)
        crop_region(mask.shape[1], mask.shape[2], x, y, "mask")
        return (mask[:, y:y + height, x:x + width].clone(),)


MASK_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]


def combine(destination: torch.Tensor, source: torch.Tensor, operation: str) -> torch.Tensor:
    """One MaskComposite operation; and/or/xor treat values above 0.5 as set. Results are clamped to 0..1."""
    if operation == "multiply":
        out = destination * source
    elif operation == "add":
        out = destination + source
    elif operation == "subtract":
        out = destination - source
    elif operation in ("and", "or", "xor"):
        a, b = destination > 0.5, source > 0.5
        out = (a & b if operation == "and" else a | b if operation == "or" else a ^ b).float()
    else:
        raise ValueError(f"unknown operation {operation!r}; choose one of {MASK_OPERATIONS}")
    return out.clamp(0.0, 1.0)


@node(category="mask", outputs=[Output("MASK", tooltip="The destination with the source combined into it.")])
class MaskComposite:
    """Combine a source mask into a destination mask at (x, y). Only the overlapping area changes; a source
    running past the destination's edge is cut off. Batches of one are broadcast to the other's size."""
    destination = Socket("MASK", tooltip="The mask to combine into; it decides the size of the result.")
    source = Socket("MASK", tooltip="The mask combined into the destination, its top-left corner at (x, y).")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Where the source's left edge goes.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Where the source's top edge goes.")
    operation = Combo(MASK_OPERATIONS, tooltip="How source and destination combine: arithmetic, or logic with "
                                               "values above 0.5 counting as set. The result is clamped to 0..1.")

    def run(self, ctx, destination, source, x, y, operation):
        destination, source = mask_batch(destination, "destination"), mask_batch(source, "source")
        b_dst, height, width = destination.shape
        b_src, s_height, s_width = source.shape
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"destination is {width}x{height} but source is {s_width}x{s_height} and x={x}, y={y} "
                             f"lies outside it")
        if b_dst != b_src and 1 not in (b_dst, b_src):
            raise ValueError(f"destination has a batch of {b_dst} masks and source of {b_src}: batches must "
                             f"match, or one must be 1")
        batch = max(b_dst, b_src)
        out = destination.expand(batch, height, width).clone()
        bottom, right = min(y + s_height, height), min(x + s_width, width)
        region = out[:, y:bottom, x:right]
        part = source[:, :bottom - y, :right - x].expand(batch, bottom - y, right - x)
        out[:, y:bottom, x:right] = combine(region, part, operation)
        return (out,)


def _edge_ramp(length: int, size: int, device) -> torch.Tensor:
    """Per-pixel factors for feathering `size` pixels (at most `length`) from one edge: (k + 1) / size for the
    k-th pixel."""
    ramp = torch.ones(length, device=device)
    size = min(size, length)
    if size > 0:
        k = torch.arange(size, device=device, dtype=torch.float32)
        ramp[:k.numel()] = (k + 1.0) / size
    return ramp


@node(category="mask", outputs=[Output("MASK", tooltip="The mask faded towards the chosen edges.")])
class FeatherMask:
    """Fade a mask linearly towards its edges: the k-th pixel from an edge (k = 0 at the edge) is multiplied by
    (k + 1) / amount, so the fade reaches full strength `amount` pixels in (an amount beyond the mask's size counts
    as the size). Sides fade independently and multiply where they overlap."""
    mask = Socket("MASK", tooltip="The mask to feather.")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Pixels of fade at the left edge (0: none).")
    top = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Pixels of fade at the top edge (0: none).")
    right = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Pixels of fade at the right edge (0: none).")
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Pixels of fade at the bottom edge (0: none).")

    def run(self, ctx, mask, left, top, right, bottom):
        mask = mask_batch(mask)
        _, height, width = mask.shape
        device = mask.device
        columns = _edge_ramp(width, left, device) * _edge_ramp(width, right, device).flip(0)
        rows = _edge_ramp(height, top, device) * _edge_ramp(height, bottom, device).flip(0)
        return (mask * rows.view(1, height, 1) * columns.view(1, 1, width),)


def _dilate_once(mask: torch.Tensor, tapered: bool) -> torch.Tensor:
    """Grey dilation by a 3x3 square, or by a 3x3 cross when `tapered` (pixels outside the mask are ignored)."""
    padded = torch.nn.functional.pad(mask.unsqueeze(1), (1, 1, 1, 1), mode="replicate")[:, 0]
    h, w = mask.shape[1], mask.shape[2]
    out = mask
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if (dy, dx) == (1, 1) or (tapered and dy != 1 and dx != 1):
                continue
            out = torch.maximum(out, padded[:, dy:dy + h, dx:dx + w])
    return out


@node(category="mask", display_name="Grow Mask",
      outputs=[Output("MASK", tooltip="The grown (or shrunk) mask.")])
class GrowMask:
    """Grow a mask by `expand` pixels (a 3x3 grey dilation repeated), or shrink it for negative values (erosion).
    Tapered corners use a cross instead of a square, so corners round off (a diamond shape per step count)."""
    mask = Socket("MASK", tooltip="The mask to grow or shrink.")
    expand = Int(0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1,
                 tooltip="Pixels to grow by; negative values shrink the mask.")
    tapered_corners = Boolean(True, tooltip="Round the corners off (cross-shaped steps) instead of keeping them "
                                            "square.")

    def run(self, ctx, mask, expand, tapered_corners=True):
        mask = mask_batch(mask)
        sign = -1.0 if expand < 0 else 1.0
        # after h + w steps every pixel has seen every other, so more steps change nothing
        steps = min(abs(int(expand)), mask.shape[1] + mask.shape[2])
        out = mask * sign  # erosion is dilation of the negated mask
        for _ in range(steps):
            if ctx is not None:
                ctx.check_interrupt()
            out = _dilate_once(out, tapered_corners)
        return (out * sign,)


@node(category="mask", outputs=[Output("MASK", tooltip="1 where the mask is above the value, else 0.")])
class ThresholdMask:
    """Make a mask hard: pixels strictly above `value` become 1, the others 0."""
    mask = Socket("MASK", tooltip="The mask to threshold.")
    value = Float(0.5, min=0.0, max=1.0, step=0.01, tooltip="The cut-off; pixels above it become 1.")

    def run(self, ctx, mask, value):
        return ((mask_batch(mask) > value).float(),)


NODES = [MaskToImage, ImageToMask, ImageColorToMask, SolidMask, InvertMask, CropMask, MaskComposite, FeatherMask,
         GrowMask, ThresholdMask]
