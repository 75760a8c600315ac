"""Resizing images: to a size, or by a factor. IMAGE is float32 [B, H, W, C] in 0..1."""
from __future__ import annotations

from diffusion.image_ops import common_upscale
from nodes.declare import MAX_RESOLUTION, Combo, Float, Int, Output, Socket, node

UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
_METHOD_TIP = "Resampling filter: nearest-exact keeps hard pixels, area is best for shrinking, lanczos is sharpest."


def resize_image(image, width: int, height: int, method: str, crop: str = "disabled"):
    samples = image.movedim(-1, 1)
    out = common_upscale(samples, width, height, method, crop)
    if method in ("bicubic", "lanczos"):
        out = out.clamp(0.0, 1.0)  # these filters overshoot at edges
    return out.movedim(1, -1)


@node(category="image/upscaling", display_name="Upscale Image",
      outputs=[Output("IMAGE", tooltip="The resized images.")])
class ImageScale:
    """Resize images to a width and height (0 for one side keeps the aspect ratio)."""
    image = Socket("IMAGE", tooltip="The images to resize.")
    upscale_method = Combo(UPSCALE_METHODS, tooltip=_METHOD_TIP)
    width = Int(512, min=0, max=MAX_RESOLUTION, step=1, tooltip="Target width; 0 follows the height's ratio.")
    height = Int(512, min=0, max=MAX_RESOLUTION, step=1, tooltip="Target height; 0 follows the width's ratio.")
    crop = Combo(["disabled", "center"], tooltip="'center' crops to the target aspect ratio before resizing.")

    def run(self, ctx, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1], image.shape[2]
        if width == 0:
            width = max(1, round(w * height / h))
        elif height == 0:
            height = max(1, round(h * width / w))
        return (resize_image(image, width, height, upscale_method, crop),)


@node(category="image/upscaling", display_name="Upscale Image By",
      outputs=[Output("IMAGE", tooltip="The resized images.")])
class ImageScaleBy:
    """Resize images by a factor."""
    image = Socket("IMAGE", tooltip="The images to resize.")
    upscale_method = Combo(UPSCALE_METHODS, tooltip=_METHOD_TIP)
    scale_by = Float(1.0, min=0.01, max=8.0, step=0.01, tooltip="The factor: 2 doubles width and height.")

    def run(self, ctx, image, upscale_method, scale_by):
        width = max(1, round(image.shape[2] * scale_by))
        height = max(1, round(image.shape[1] * scale_by))
        return (resize_image(image, width, height, upscale_method),)


NODES = [ImageScale, ImageScaleBy]
