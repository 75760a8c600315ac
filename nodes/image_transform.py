"""Resizing images: to a size, or by a factor. IMAGE is float32 [B, H, W, C] in 0..1."""
from __future__ import annotations

import math

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


def size_for_megapixels(width: float, height: float, megapixels: float, multiple: int) -> tuple:
    """The width x height of `width`:`height`'s aspect ratio holding `megapixels` (1 MP = 1024² pixels), each
    rounded to the nearest multiple of `multiple` (Python's rounding, halves to even)."""
    scale = math.sqrt(megapixels * 1024 * 1024 / (width * height))
    return (round(width * scale / multiple) * multiple, round(height * scale / multiple) * multiple)


ASPECT_RATIOS = {"1:1 (Square)": (1, 1), "3:2 (Photo)": (3, 2), "4:3 (Standard)": (4, 3),
                 "16:9 (Widescreen)": (16, 9), "21:9 (Ultrawide)": (21, 9), "2:3 (Portrait Photo)": (2, 3),
                 "3:4 (Portrait Standard)": (3, 4), "9:16 (Portrait Widescreen)": (9, 16)}


@node(category="utils", display_name="Resolution Selector",
      outputs=[Output("INT", "width", tooltip="Width in pixels, a multiple of `multiple`."),
               Output("INT", "height", tooltip="Height in pixels, a multiple of `multiple`.")])
class ResolutionSelector:
    """A width and height for an aspect ratio and a number of megapixels (for Empty Latent Image and the like)."""
    aspect_ratio = Combo(list(ASPECT_RATIOS), tooltip="The shape of the image.")
    megapixels = Float(1.0, min=0.1, max=16.0, step=0.1, tooltip="Target size; 1.0 MP is 1024x1024 when square.")
    multiple = Int(8, min=8, max=128, step=4, tooltip="Width and height are rounded to a multiple of this.")

    def run(self, ctx, aspect_ratio, megapixels, multiple=8):
        w, h = ASPECT_RATIOS[aspect_ratio]
        return size_for_megapixels(w, h, megapixels, multiple)


@node(category="image/upscaling", display_name="Scale Image to Total Pixels",
      outputs=[Output("IMAGE", tooltip="The resized images.")])
class ImageScaleToTotalPixels:
    """Resize images, keeping their aspect ratio, to about a number of megapixels (1 MP = 1024x1024 pixels)."""
    image = Socket("IMAGE", tooltip="The images to resize.")
    upscale_method = Combo(UPSCALE_METHODS, tooltip=_METHOD_TIP)
    megapixels = Float(1.0, min=0.01, max=16.0, step=0.01, tooltip="Target size in units of 1024x1024 pixels.")
    resolution_steps = Int(1, min=1, max=256, tooltip="Width and height are rounded to a multiple of this.")

    def run(self, ctx, image, upscale_method, megapixels, resolution_steps=1):
        h, w = image.shape[1], image.shape[2]
        width, height = size_for_megapixels(w, h, megapixels, resolution_steps)
        if width < 1 or height < 1:
            raise ValueError(f"ImageScaleToTotalPixels: {megapixels} MP in steps of {resolution_steps} leaves a "
                             f"{width}x{height} image from {w}x{h}; lower resolution_steps or raise megapixels")
        # common_upscale itself, as the reference node calls it (no clamp after bicubic, unlike resize_image)
        return (common_upscale(image.movedim(-1, 1), int(width), int(height), upscale_method,
                               "disabled").movedim(1, -1),)


@node(category="image/upscaling", display_name="Scale Image to Max Dimension",
      outputs=[Output("IMAGE", tooltip="The images with their longer side at largest_size.")])
class ImageScaleToMaxDimension:
    """Resize images, keeping their aspect ratio, so that the longer side is `largest_size` pixels."""
    image = Socket("IMAGE", tooltip="The images to resize.")
    upscale_method = Combo(["area", "lanczos", "bilinear", "nearest-exact", "bicubic"], tooltip=_METHOD_TIP)
    largest_size = Int(512, min=0, max=MAX_RESOLUTION, step=1, tooltip="The longer side in pixels (the shorter "
                       "is scaled alike and rounded).")

    def run(self, ctx, image, upscale_method, largest_size):
        h, w = image.shape[1], image.shape[2]
        if h > w:
            width, height = round(w / h * largest_size), largest_size
        elif w > h:
            width, height = largest_size, round(h / w * largest_size)
        else:
            width = height = largest_size
        if width < 1 or height < 1:
            raise ValueError(f"largest_size: {largest_size} leaves a {width}x{height} image from {w}x{h}")
        return (common_upscale(image.movedim(-1, 1), int(width), int(height), upscale_method,
                               "disabled").movedim(1, -1),)


@node(category="image/transform", display_name="Resize And Pad Image",
      outputs=[Output("IMAGE", tooltip="The images fitted into the target size, padded around.")])
class ResizeAndPadImage:
    """Fit images into a width and height keeping their aspect ratio, then pad the rest, centred."""
    image = Socket("IMAGE", tooltip="The images to fit.")
    target_width = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Output width in pixels.")
    target_height = Int(512, min=1, max=MAX_RESOLUTION, step=1, tooltip="Output height in pixels.")
    padding_color = Combo(["white", "black"], tooltip="Colour of the padding.")
    interpolation = Combo(["area", "bicubic", "nearest-exact", "bilinear", "lanczos"], tooltip=_METHOD_TIP)

    def run(self, ctx, image, target_width, target_height, padding_color, interpolation):
        batch, h, w, channels = image.shape
        scale = min(target_width / w, target_height / h)
        width, height = int(w * scale), int(h * scale)
        resized = common_upscale(image.movedim(-1, 1), width, height, interpolation, "disabled").movedim(1, -1)
        fill = 0.0 if padding_color == "black" else 1.0
        out = image.new_full((batch, target_height, target_width, channels), fill)
        top, left = (target_height - height) // 2, (target_width - width) // 2
        out[:, top:top + height, left:left + width] = resized
        return (out,)


@node(category="image", display_name="Get Image Size",
      outputs=[Output("INT", "width", tooltip="Width in pixels."),
               Output("INT", "height", tooltip="Height in pixels."),
               Output("INT", "batch_size", tooltip="Number of images in the batch.")])
class GetImageSize:
    """The width, height and batch size of images (also shown on the node)."""
    image = Socket("IMAGE", tooltip="The images to measure.")

    def run(self, ctx, image):
        batch, height, width = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        show = getattr(ctx, "show_text", None)
        if show is not None:
            show(f"width: {width}, height: {height}\n batch size: {batch}")
        return (width, height, batch)


NODES = [ImageScale, ImageScaleBy, ImageScaleToTotalPixels, ImageScaleToMaxDimension, GetImageSize, ResolutionSelector,
         ResizeAndPadImage]
