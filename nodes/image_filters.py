"""Image post-processing filters: blend two images, blur, sharpen, and reduce to a palette (with dithering).
IMAGE is float32 [B, H, W, C] in 0..1."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from diffusion.image_ops import common_upscale
from nodes.declare import Combo, Float, Int, Output, Socket, node
from nodes.image_batch import check_image

BLEND_MODES = ["normal", "multiply", "screen", "overlay", "soft_light", "difference"]
DITHER_MODES = ["none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"]


def blend(base: torch.Tensor, top: torch.Tensor, mode: str) -> torch.Tensor:
    """The separable blend modes of the W3C Compositing spec, `base` the backdrop and `top` the source."""
    if mode == "normal":
        return top
    if mode == "multiply":
        return base * top
    if mode == "screen":
        return 1.0 - (1.0 - base) * (1.0 - top)
    if mode == "overlay":  # hard light with the layers swapped: the backdrop decides
        return torch.where(base <= 0.5, 2.0 * base * top, 1.0 - 2.0 * (1.0 - base) * (1.0 - top))
    if mode == "soft_light":
        curve = torch.where(base <= 0.25, ((16.0 * base - 12.0) * base + 4.0) * base, base.clamp(min=0.0).sqrt())
        return torch.where(top <= 0.5, base - (1.0 - 2.0 * top) * base * (1.0 - base),
                           base + (2.0 * top - 1.0) * (curve - base))
    if mode == "difference":  # the reference's signed difference (the final clamp makes it max(0, base - top))
        return base - top
    raise ValueError(f"unknown blend_mode {mode!r}; choose one of {BLEND_MODES}")


@node(category="image/postprocessing", outputs=[Output("IMAGE", tooltip="The blended images, clamped to 0..1.")])
class ImageBlend:
    """Blend image2 over image1 with a blend mode, then mix: image1 * (1 - factor) + blended * factor.
    image2 is resized (bicubic, centre-cropped to the aspect ratio) to image1's size when they differ."""
    image1 = Socket("IMAGE", tooltip="The backdrop; it decides the size of the result.")
    image2 = Socket("IMAGE", tooltip="The layer blended onto image1.")
    blend_factor = Float(0.5, min=0.0, max=1.0, step=0.01,
                         tooltip="How much of the blended result to use: 0 keeps image1, 1 is the full blend.")
    blend_mode = Combo(BLEND_MODES, tooltip="How the two images combine (the W3C/Photoshop definitions; "
                                            "'difference' is image1 - image2, negative parts clamped to 0 as in ComfyUI).")

    def run(self, ctx, image1, image2, blend_factor, blend_mode):
        check_image(image1, "image1")
        check_image(image2, "image2")
        b1, b2 = image1.shape[0], image2.shape[0]
        if b1 != b2 and 1 not in (b1, b2):
            raise ValueError(f"image1 has a batch of {b1} and image2 of {b2}: batches must match, or one must be 1")
        channels = min(image1.shape[-1], image2.shape[-1])
        base, top = image1[..., :channels], image2[..., :channels].to(image1.dtype)
        if top.shape[1:3] != base.shape[1:3]:
            top = common_upscale(top.movedim(-1, 1), base.shape[2], base.shape[1], "bicubic", "center")
            top = top.movedim(1, -1).clamp(0.0, 1.0)
        mixed = base * (1.0 - blend_factor) + blend(base, top, blend_mode) * blend_factor
        return (mixed.clamp(0.0, 1.0),)


def gaussian_taps(radius: int, sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of 2 * radius + 1 taps. `sigma` is relative to the radius: tap k (-radius..radius)
    sits at k / radius, so the standard deviation in pixels is sigma * radius."""
    positions = torch.linspace(-1.0, 1.0, 2 * radius + 1, dtype=torch.float64)
    taps = torch.exp(-positions ** 2 / (2.0 * sigma ** 2))
    return (taps / taps.sum()).float()


def _mirror_indices(size: int, radius: int) -> torch.Tensor:
    """Indices -radius..size-1+radius folded back into the image by mirroring about the edge pixels (the edge is
    not repeated); works for any radius, even one larger than the image."""
    index = torch.arange(-radius, size + radius)
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def gaussian_blur(image: torch.Tensor, radius: int, sigma: float) -> torch.Tensor:
    """Blur [B, H, W, C] with the separable Gaussian of `gaussian_taps`, mirroring at the edges."""
    taps = gaussian_taps(radius, sigma).to(image.device)
    b, h, w, c = image.shape
    x = image.movedim(-1, 1).reshape(b * c, 1, h, w).float()
    x = x.index_select(2, _mirror_indices(h, radius).to(image.device))
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1))
    x = x.index_select(3, _mirror_indices(w, radius).to(image.device))
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1))
    return x.reshape(b, c, h, w).movedim(1, -1).to(image.dtype)


def _check_radius(radius: int, sigma: float, names: tuple) -> None:
    if radius < 1:
        raise ValueError(f"{names[0]} must be at least 1, got {radius}")
    if sigma <= 0:
        raise ValueError(f"{names[1]} must be above 0, got {sigma}")


@node(category="image/postprocessing", outputs=[Output("IMAGE", tooltip="The blurred images.")])
class ImageBlur:
    """Gaussian blur. The kernel spans 2 * blur_radius + 1 pixels; its standard deviation is sigma * blur_radius
    pixels (sigma is relative to the radius). Edges are mirrored."""
    image = Socket("IMAGE", tooltip="The images to blur.")
    blur_radius = Int(1, min=1, max=31, step=1, tooltip="Kernel half-width in pixels.")
    sigma = Float(1.0, min=0.1, max=10.0, step=0.1,
                  tooltip="Spread of the Gaussian relative to the radius: 1 gives a standard deviation of "
                          "blur_radius pixels; larger values approach a box blur.")

    def run(self, ctx, image, blur_radius, sigma):
        check_image(image, "image")
        _check_radius(blur_radius, sigma, ("blur_radius", "sigma"))
        return (gaussian_blur(image, blur_radius, sigma),)


@node(category="image/postprocessing", outputs=[Output("IMAGE", tooltip="The sharpened images, clamped to 0..1.")])
class ImageSharpen:
    """Unsharp masking: the detail (image minus its Gaussian blur, as in ImageBlur) is added back 10 * alpha
    times: image + 10 * alpha * (image - blur(image)), clamped to 0..1."""
    image = Socket("IMAGE", tooltip="The images to sharpen.")
    sharpen_radius = Int(1, min=1, max=31, step=1, tooltip="Half-width in pixels of the blur the detail is "
                                                           "measured against.")
    sigma = Float(1.0, min=0.1, max=10.0, step=0.01,
                  tooltip="Spread of that blur relative to the radius (standard deviation sigma * radius pixels).")
    alpha = Float(1.0, min=0.0, max=5.0, step=0.01, tooltip="Strength: the detail is amplified by 10 * alpha "
                                                            "(0 leaves the image unchanged).")

    def run(self, ctx, image, sharpen_radius, sigma, alpha):
        check_image(image, "image")
        _check_radius(sharpen_radius, sigma, ("sharpen_radius", "sigma"))
        detail = image - gaussian_blur(image, sharpen_radius, sigma)
        return ((image + 10.0 * alpha * detail).clamp(0.0, 1.0),)


def bayer_matrix(size: int) -> np.ndarray:
    """The size x size Bayer index matrix (size a power of two): every value 0..size^2-1 once, spread so that
    each prefix of thresholds is as even as possible. M(2n) = [[4M, 4M + 2], [4M + 3, 4M + 1]]."""
    if size < 1 or size & (size - 1):
        raise ValueError(f"a Bayer matrix needs a power-of-two size, got {size}")
    matrix = np.zeros((1, 1), dtype=np.int64)
    while matrix.shape[0] < size:
        m = 4 * matrix
        matrix = np.block([[m, m + 2], [m + 3, m + 1]])
    return matrix


def ordered_dither_offsets(height: int, width: int, size: int, spread: float) -> np.ndarray:
    """Per-pixel offsets for ordered dithering, tiled from the Bayer matrix: thresholds (M + 0.5) / size^2 - 0.5,
    times `spread` (the palette's colour spacing), so a grey between two palette colours becomes a pattern whose
    mix of the two matches it to 1 / size^2."""
    thresholds = (bayer_matrix(size) + 0.5) / (size * size) - 0.5
    reps = (-(-height // size), -(-width // size))
    return np.tile(thresholds, reps)[:height, :width] * spread


def palette_spacing(palette: np.ndarray) -> float:
    """The typical step between palette colours (0..1 units): the median over colours of the distance to the
    nearest other colour, measured as the largest per-channel difference (exact for grey and one-channel ramps)."""
    if len(palette) < 2:
        return 0.0
    colours = palette.astype(np.float64) / 255.0
    steps = np.abs(colours[:, None, :] - colours[None, :, :]).max(-1)
    np.fill_diagonal(steps, np.inf)
    return float(np.median(steps.min(1)))


def nearest_colours(pixels: np.ndarray, palette: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Each uint8 RGB pixel ([N, 3]) replaced by its nearest palette colour ([K, 3]) in squared RGB distance
    (exact, unlike PIL's cached lookup; ties go to the earlier palette entry)."""
    colours = torch.from_numpy(palette.astype(np.float32))
    norms = (colours ** 2).sum(1)
    out = np.empty_like(pixels)
    for start in range(0, len(pixels), chunk):
        block = torch.from_numpy(pixels[start:start + chunk].astype(np.float32))
        # |p - c|^2 - |p|^2 = |c|^2 - 2 p.c: exact in float32 for 8-bit values
        index = (norms.unsqueeze(0) - 2.0 * block @ colours.T).argmin(1)
        out[start:start + chunk] = palette[index.numpy()]
    return out


def quantize_one(rgb: np.ndarray, colors: int, dither: str) -> np.ndarray:
    """One [H, W, 3] float image reduced to a palette of at most `colors` colours built by median cut."""
    pixels = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
    source = Image.fromarray(pixels, "RGB")
    palette_image = source.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    if dither == "floyd-steinberg":
        mapped = source.quantize(palette=palette_image, dither=Image.Dither.FLOYDSTEINBERG)
        return np.asarray(mapped.convert("RGB"), dtype=np.float32) / 255.0
    used = np.unique(np.asarray(palette_image))
    palette = np.array(palette_image.getpalette(), dtype=np.uint8).reshape(-1, 3)[used]
    if dither != "none":
        offsets = ordered_dither_offsets(rgb.shape[0], rgb.shape[1], int(dither.split("-")[1]),
                                         palette_spacing(palette))
        pixels = np.clip(np.round((rgb + offsets[..., None]) * 255.0), 0, 255).astype(np.uint8)
    mapped = nearest_colours(pixels.reshape(-1, 3), palette).reshape(pixels.shape)
    return mapped.astype(np.float32) / 255.0


@node(category="image/postprocessing", outputs=[Output("IMAGE", tooltip="The images in at most `colors` colours.")])
class ImageQuantize:
    """Reduce each image to a palette of at most `colors` colours (median cut, per image), mapping pixels to
    the nearest palette colour with optional dithering: Floyd-Steinberg error diffusion, or ordered (Bayer)
    dithering with an N x N threshold matrix scaled to the palette's colour spacing. An alpha channel is kept
    as it is."""
    image = Socket("IMAGE", tooltip="The images to quantize.")
    colors = Int(256, min=1, max=256, step=1, tooltip="The most colours in each image's palette.")
    dither = Combo(DITHER_MODES, tooltip="How to hide banding: none, Floyd-Steinberg error diffusion, or an "
                                         "ordered Bayer pattern of 2x2 to 16x16 pixels.")

    def run(self, ctx, image, colors, dither):
        check_image(image, "image")
        if not 1 <= colors <= 256:
            raise ValueError(f"colors must be between 1 and 256, got {colors}")
        if dither not in DITHER_MODES:
            raise ValueError(f"unknown dither {dither!r}; choose one of {DITHER_MODES}")
        if image.shape[-1] < 3:
            raise ValueError(f"image needs 3 colour channels, it has {image.shape[-1]}")
        out = image.clone()
        array = image[..., :3].float().cpu().numpy()
        for index in range(image.shape[0]):
            if ctx is not None:
                ctx.check_interrupt()
            out[index, ..., :3] = torch.from_numpy(quantize_one(array[index], colors, dither)).to(out)
        return (out,)


NODES = [ImageBlend, ImageSharpen, ImageBlur, ImageQuantize]
