"""Cutting and pasting images: crop a rectangle, paste one image into another through a mask, and pad an image
for outpainting. IMAGE is float32 [B, H, W, C] in 0..1; MASK [B, H, W]."""
from __future__ import annotations

import torch

from diffusion.image_ops import common_upscale, repeat_to_batch_size
from nodes.declare import MAX_RESOLUTION, Boolean, Int, Output, Socket, node
from nodes.image_batch import check_image, match_channels
from nodes.masks import mask_batch


@node(category="image/transform", display_name="Image Crop",
      outputs=[Output("IMAGE", tooltip="The cropped images.")])
class ImageCrop:
    """Cut a rectangle out of every image of a batch. A rectangle running past the image's edge stops at the edge,
    so the result can be smaller than asked; a corner beyond the edge moves to the last pixel row/column, as in
    the reference."""
    image = Socket("IMAGE", tooltip="The images to crop.")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width of the rectangle.")
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height of the rectangle.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Left edge of the rectangle.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Top edge of the rectangle.")

    def run(self, ctx, image, width, height, x, y):
        check_image(image, "image")
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width, :].clone(),)


def paste(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask=None,
          resize_source: bool = False) -> torch.Tensor:
    """Blend `source` ([B, H, W, C]) into a copy of `destination` with its top-left corner at (x, y):
    out = mask * source + (1 - mask) * destination over the overlap. The mask is resized (bilinear) to the source's
    size; the source (and mask) batches repeat or are cut to the destination's batch size. A corner beyond the
    destination's edge pastes nothing (the reference clamps it to the edge)."""
    b_dst, height, width, channels = destination.shape
    if x < 0 or y < 0:
        raise ValueError(f"x and y must not be negative, got x={x}, y={y}")
    x, y = min(x, width), min(y, height)
    source = match_channels(source, channels).to(destination.dtype)
    if resize_source and source.shape[1:3] != destination.shape[1:3]:
        source = common_upscale(source.movedim(-1, 1), width, height, "bilinear").movedim(1, -1)
    source = repeat_to_batch_size(source, b_dst)
    s_height, s_width = source.shape[1], source.shape[2]
    if mask is None:
        mask = torch.ones(b_dst, s_height, s_width, dtype=destination.dtype, device=destination.device)
    else:
        mask = mask_batch(mask).to(destination.device, destination.dtype)
        if mask.shape[1:] != (s_height, s_width):
            mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=(s_height, s_width),
                                                   mode="bilinear")[:, 0]
        mask = repeat_to_batch_size(mask, b_dst)
    bottom, right = min(y + s_height, height), min(x + s_width, width)
    weight = mask[:, :bottom - y, :right - x].unsqueeze(-1)
    out = destination.clone()
    region = out[:, y:bottom, x:right, :]
    out[:, y:bottom, x:right, :] = weight * source[:, :bottom - y, :right - x, :] + (1.0 - weight) * region
    return out


@node(category="image", outputs=[Output("IMAGE", tooltip="The destination with the source pasted in.")])
class ImageCompositeMasked:
    """Paste a source image into a destination image at (x, y), optionally through a mask (1 takes the source,
    0 keeps the destination, values between blend). Parts of the source beyond the destination's edge are cut
    off. Batches: the source and mask repeat (or are cut) to the destination's batch size."""
    destination = Socket("IMAGE", tooltip="The image pasted into; it decides the size of the result.")
    source = Socket("IMAGE", tooltip="The image to paste, its top-left corner at (x, y).")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Where the source's left edge goes.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Where the source's top edge goes.")
    resize_source = Boolean(False, tooltip="Resize the source (bilinear) to the destination's size first.")
    mask = Socket("MASK", optional=True, tooltip="How much of the source to use per pixel; resized to the source's "
                                                 "size. Without it the whole source is pasted.")

    def run(self, ctx, destination, source, x, y, resize_source, mask=None):
        check_image(destination, "destination")
        check_image(source, "source")
        return (paste(destination, source, x, y, mask, resize_source),)


def outpaint_mask(height: int, width: int, left: int, top: int, right: int, bottom: int,
                  feathering: int) -> torch.Tensor:
    """The outpainting mask [1, H', W'] of an image padded by (left, top, right, bottom): 1 on the new border.
    Inside the original, with d the distance to the nearest padded side -- row i is i from the top and height - i
    from the bottom (column j likewise), the reference's measure, so the last row is 1 from the bottom -- a pixel
    with d < feathering gets ((feathering - d) / feathering)^2, others 0. Feathering applies only when it is under
    half the image's height and width (else the inside stays 0), as in the reference."""
    mask = torch.ones(1, top + height + bottom, left + width + right, dtype=torch.float32)
    inner = torch.zeros(height, width, dtype=torch.float32)
    if 0 < feathering and 2 * feathering < min(height, width):
        rows = torch.arange(height, dtype=torch.float32).view(-1, 1).expand(height, width)
        cols = torch.arange(width, dtype=torch.float32).view(1, -1).expand(height, width)
        to_sides = [distance for padded, distance in ((top, rows), (bottom, height - rows), (left, cols),
                                                      (right, width - cols)) if padded]
        if to_sides:
            nearest = torch.stack(to_sides).amin(dim=0)
            inner = ((feathering - nearest) / feathering).clamp(min=0.0) ** 2
    mask[0, top:top + height, left:left + width] = inner
    return mask


@node(category="image", display_name="Pad Image for Outpainting",
      outputs=[Output("IMAGE", tooltip="The image on a larger canvas, the new border filled with 0.5 grey."),
               Output("MASK", tooltip="1 on the new border, fading quadratically to 0 over `feathering` pixels "
                                      "into the original image; 0 elsewhere.")])
class ImagePadForOutpaint:
    """Add a border around images to outpaint into, with the mask that tells an inpainting sampler where to paint.
    The mask is 1 on the border and fades quadratically over `feathering` pixels into the original, so the new
    content blends into the old (the exact rule: `outpaint_mask`)."""
    image = Socket("IMAGE", tooltip="The images to pad.")
    left = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels to add on the left.")
    top = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels to add on the top.")
    right = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels to add on the right.")
    bottom = Int(0, min=0, max=MAX_RESOLUTION, step=8, tooltip="Pixels to add on the bottom.")
    feathering = Int(40, min=0, max=MAX_RESOLUTION, step=1,
                     tooltip="How many pixels into the original image the mask fades out over (0: a hard edge).")

    def run(self, ctx, image, left, top, right, bottom, feathering):
        check_image(image, "image")
        for name, value in (("left", left), ("top", top), ("right", right), ("bottom", bottom),
                            ("feathering", feathering)):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        b, height, width, channels = image.shape
        padded = torch.full((b, top + height + bottom, left + width + right, channels), 0.5,
                            dtype=torch.float32, device=image.device)
        padded[:, top:top + height, left:left + width, :] = image
        mask = outpaint_mask(height, width, left, top, right, bottom, feathering).to(image.device)
        return (padded, mask)


NODES = [ImageCrop, ImageCompositeMasked, ImagePadForOutpaint]
