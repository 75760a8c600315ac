"""Image batches: join two batches, repeat one, take a slice of one, and regroup a list of batches.
IMAGE is float32 [B, H, W, C] in 0..1."""
from __future__ import annotations

import torch

from diffusion.image_ops import common_upscale
from nodes.declare import Int, Output, Socket, node


def match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB <-> RGBA without failing: an added alpha channel is opaque (1), a dropped one is discarded."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have > channels:
        return image[..., :channels]
    pad = torch.ones(*image.shape[:-1], channels - have, dtype=image.dtype, device=image.device)
    return torch.cat([image, pad], dim=-1)


def check_image(image, name: str) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name} must be an IMAGE tensor [batch, height, width, channels], got {shape}")
    return image


@node(category="image", display_name="Batch Images", deprecated=True,
      outputs=[Output("IMAGE", tooltip="image1's images followed by image2's, all at image1's size.")])
class ImageBatch:
    """Join two image batches into one. When the sizes differ, image2 is centre-cropped to image1's aspect ratio
    and rescaled bilinearly to image1's width and height (a batch holds one size); an RGB batch joined with an
    RGBA one gains an opaque alpha channel."""
    image1 = Socket("IMAGE", tooltip="The first images; they decide the size of the result.")
    image2 = Socket("IMAGE", tooltip="The images appended after image1's, resized to image1's size if needed.")

    def run(self, ctx, image1, image2):
        return (batch_images([check_image(image1, "image1"), check_image(image2, "image2")]),)


def batch_images(images: list) -> torch.Tensor:
    """Image batches joined in order at the first's size (centre-cropped to its aspect ratio, rescaled
    bilinearly), with an opaque alpha channel added where RGB meets RGBA."""
    channels = max(image.shape[-1] for image in images)
    first = match_channels(images[0], channels)
    height, width = first.shape[1], first.shape[2]
    parts = [first]
    for image in images[1:]:
        image = match_channels(image, channels)
        if image.shape[1:3] != first.shape[1:3]:
            image = common_upscale(image.movedim(-1, 1), width, height, "bilinear", "center").movedim(1, -1)
        parts.append(image.to(first.dtype))
    return torch.cat(parts, dim=0)


@node(category="image/batch", outputs=[Output("IMAGE", tooltip="The input batch repeated `amount` times.")])
class RepeatImageBatch:
    """Repeat a whole image batch: [a, b] with amount 3 gives [a, b, a, b, a, b]."""
    image = Socket("IMAGE", tooltip="The images to repeat.")
    amount = Int(1, min=1, max=4096, step=None, tooltip="How many copies of the batch the result holds.")

    def run(self, ctx, image, amount):
        check_image(image, "image")
        if amount < 1:
            raise ValueError(f"amount must be at least 1, got {amount}")
        return (image.repeat(amount, 1, 1, 1),)


@node(category="image/batch", outputs=[Output("IMAGE", tooltip="The selected images, in batch order.")])
class ImageFromBatch:
    """Take `length` consecutive images out of a batch, starting at `batch_index`; a length running past the end
    of the batch stops at its last image, and an index past the end takes the last image (as in the reference)."""
    image = Socket("IMAGE", tooltip="The batch to take images from.")
    batch_index = Int(0, min=0, max=4095, step=None,
                      tooltip="Index of the first image to take (0 is the first; past the end takes the last).")
    length = Int(1, min=1, max=4096, step=None, tooltip="How many images to take; fewer if the batch ends first.")

    def run(self, ctx, image, batch_index, length):
        check_image(image, "image")
        size = image.shape[0]
        if batch_index < 0:
            raise ValueError(f"batch_index must not be negative, got {batch_index}")
        batch_index = min(batch_index, size - 1)
        if length < 1:
            raise ValueError(f"length must be at least 1, got {length}")
        return (image[batch_index:batch_index + length].clone(),)


@node(category="image/batch", display_name="Rebatch Images", input_is_list=True,
      outputs=[Output("IMAGE", is_list=True,
                      tooltip="A list of batches of at most batch_size images each; downstream nodes run once "
                              "per batch.")])
class RebatchImages:
    """Regroup images into batches of `batch_size`, keeping their order. All incoming batches (a list, from a
    list-producing node, or a single batch) are split into single images first; a batch is closed early where the
    image size changes, as one batch holds one size."""
    images = Socket("IMAGE", tooltip="The images to regroup: one batch or a list of batches.")
    batch_size = Int(1, min=1, max=4096, step=None, tooltip="The most images per output batch.")

    def run(self, ctx, images, batch_size):
        size = batch_size[0] if isinstance(batch_size, (list, tuple)) else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be at least 1, got {size}")
        batches = images if isinstance(images, (list, tuple)) else [images]
        groups: list = []
        for index, batch in enumerate(batches):
            check_image(batch, f"images[{index}]")
            for single in batch.split(1, dim=0):
                last = groups[-1] if groups else None
                if last is None or len(last) >= size or last[0].shape[1:] != single.shape[1:]:
                    groups.append([single])
                else:
                    last.append(single)
        return ([torch.cat(group, dim=0) for group in groups],)


NODES = [ImageBatch, RepeatImageBatch, ImageFromBatch, RebatchImages]
