"""Cutting and pasting images: crop a rectangle, paste one image into another through a mask, and pad an image
for outpainting. IMAGE is float32 [B, H, W, C] in 0..1; MASK [B, H, W]."""
from __future__ import annotations

import torch

from diffusion.image_ops import common_upscale, repeat_to_batch_size
from nodes.declare import MAX_RESOLUTION, Boolean, Int, Output, Socket, node
from nodes.image_batch import check_image, match_channels
from nodes.masks import crop_region, mask_batch


@node(category="image/transform", display_name="Image Crop",
      outputs=[Output("IMAGE", tooltip="The cropped images.")])
class ImageCrop:
    """Cut a rectangle out of every image of a batch. A rectangle running past the image's edge stops at the edge,
    so the result can be smaller than asked; a corner outside the image is an error."""
    image = Socket("IMAGE", tooltip="The images to crop.")
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width of the rectangle.")
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height of the rectangle.")
    x = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Left edge of the rectangle.")
    y = Int(0, min=0, max=MAX_RESOLUTION, step=1, tooltip="Top edge of the rectangle.")

    def run(self, ctx, image, width, height, x, y):
        check_image(image, "image")
        crop_region(image.shape[1], image.shape[2], x, y, "image")
        return (image[:, y:y + height, x:x + width, :].clone(),)


def paste(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask=None,
          resize_source: bool = False) -> torch.Tensor:
    """Blend `source` ([B, H, W, C]) into a copy of `destination` with its top-left corner at (x, y):
    out = mask * source + (1 - mask) * destination over the overlap. The mask is resized (bilinear) to the source's
    size; the source (and mask) batches repeat or are cut to the destination's batch size."""
    b_dst, height, width, channels = destination.shape
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"destination is {width}x{height} but source is {source.shape[2]}x{source.shape[1]} and "
                         f"x={x}, y={y} lies outside it (x must be below {width} and y below {height})")
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
    """The outpainting mask of an image padded by (left, top, right, bottom): 1 on the new border; inside the
    original, a pixel k pixels from the nearest padded edge (k = 0 touching it; unpadded edges do not count) gets
    ((feathering - k) / feathering) ** 2 when k < feathering, else 0."""
    new_h, new_w = top + height + bottom, left + width + right
    mask = torch.ones(1, new_h, new_w, dtype=torch.float32)
    inner = torch.zeros(height, width, dtype=torch.float32)
    if feathering > 0:
        far = float(height + width)  # an unpadded side is never the nearest
        rows = torch.arange(height, dtype=torch.float32).view(-1, 1)
        cols = torch.arange(width, dtype=torch.float32).view(1, -1)
        distances = [rows if top else torch.full_like(rows, far), (height - 1 - rows) if bottom else
                     torch.full_like(rows, far), cols if left else torch.full_like(cols, far),
                     (width - 1 - cols) if right else torch.full_like(cols, far)]
        nearest = torch.minimum(torch.minimum(distances[0], distances[1]), torch.minimum(distances[2], distances[3]))
        inner = ((feathering - nearest) / feathering).clamp(min=0.0) ** 2
    mask[0, top:top + height, left:left + width] = inner
    return mask


@node(category="image", display_name="Pad Image for Outpainting",
      outputs=[Output("IMAGE", tooltip="The image on a larger canvas, the new border filled with 0.5 grey."),
               Output("MASK", tooltip="1 on the new border, fading quadratically to 0 over `feathering` pixels "
                                      "into the original image; 0 elsewhere.")])
class ImagePadForOutpaint:
    """Add a border around images to outpaint into, with the mask that tells an inpainting sampler where to paint.
    The mask is 1 on the border; inside the original, a pixel k pixels from the nearest padded edge (k = 0 next to
    it) gets ((feathering - k) / feathering)^2, so the new content blends into the old."""
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
                            dtype=image.dtype, device=image.device)
        padded[:, top:top + height, left:left + width, :] = image
        mask = outpaint_mask(height, width, left, top, right, bottom, feathering).to(image.device)
        return (padded, mask)


NODES = [ImageCrop, ImageCompositeMasked, ImagePadForOutpaint]
