"""Basic image nodes: a solid-colour image, invert, and add. IMAGE is float32 [B, H, W, C] in 0..1."""
from __future__ import annotations

import torch

from nodes.declare import MAX_RESOLUTION, Boolean, Int, Output, Socket, node


@node(category="image", display_name="EmptyImage",
      outputs=[Output("IMAGE", tooltip="A batch of images filled with one colour.")])
class EmptyImage:
    """An image batch of one solid colour."""
    width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Width in pixels.")
    height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Height in pixels.")
    batch_size = Int(1, min=1, max=4096, tooltip="How many images.")
    color = Int(0, min=0, max=0xFFFFFF, step=1, display="color", tooltip="The fill colour as 0xRRGGBB.")

    def run(self, ctx, width, height, batch_size=1, color=0):
        rgb = torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32) / 255.0
        return (rgb.view(1, 1, 1, 3).expand(batch_size, height, width, 3).contiguous(),)


@node(category="image", display_name="Invert Image", outputs=[Output("IMAGE", tooltip="1 - image.")])
class ImageInvert:
    """Invert every channel: white becomes black."""
    image = Socket("IMAGE", tooltip="The images to invert.")

    def run(self, ctx, image):
        return (1.0 - image,)


@node(category="image/postprocessing", display_name="Add Images",
      outputs=[Output("IMAGE", tooltip="The per-pixel sum.")])
class ImageAdd:
    """Add two image batches pixel by pixel (same size; a batch of one is broadcast)."""
    image1 = Socket("IMAGE", tooltip="First images.")
    image2 = Socket("IMAGE", tooltip="Second images, the same width and height as the first.")
    clamp = Boolean(True, tooltip="Clamp the result to 0..1.")

    def run(self, ctx, image1, image2, clamp=True):
        if image1.shape[1:3] != image2.shape[1:3]:
            raise ValueError(f"image1 is {image1.shape[2]}x{image1.shape[1]} but image2 is "
                             f"{image2.shape[2]}x{image2.shape[1]}: both inputs must have the same size")
        if image1.shape[0] != image2.shape[0] and 1 not in (image1.shape[0], image2.shape[0]):
            raise ValueError(f"image1 has a batch of {image1.shape[0]} and image2 of {image2.shape[0]}: "
                             f"batches must match, or one must be 1")
        total = image1[..., :3] + image2[..., :3]
        return (total.clamp(0.0, 1.0) if clamp else total,)


NODES = [EmptyImage, ImageInvert, ImageAdd]
