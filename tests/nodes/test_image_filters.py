"""Image filters against references computed here: per-pixel blend formulas, a direct 2-D Gaussian convolution
in numpy, and palette / dithering properties for ImageQuantize."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from nodes.image_filters import (DITHER_MODES, ImageBlend, ImageBlur, ImageQuantize, ImageSharpen, bayer_matrix,
                                 nearest_colours, ordered_dither_offsets, palette_spacing)


def _soft_light(b, s):
    if s <= 0.5:
        return b - (1 - 2 * s) * b * (1 - b)
    d = ((16 * b - 12) * b + 4) * b if b <= 0.25 else math.sqrt(b)
    return b + (2 * s - 1) * (d - b)


BLEND_REFERENCE = {
    "normal": lambda b, s: s,
    "multiply": lambda b, s: b * s,
    "screen": lambda b, s: b + s - b * s,
    "overlay": lambda b, s: 2 * b * s if b <= 0.5 else 1 - 2 * (1 - b) * (1 - s),
    "soft_light": _soft_light,
    "difference": lambda b, s: b - s,  # signed: the final clamp cuts the negative part
}


@pytest.mark.parametrize("mode", list(BLEND_REFERENCE))
@pytest.mark.parametrize("factor", [1.0, 0.3])
def test_blend_modes(mode, factor):
    levels = [0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.8, 1.0]
    grid = np.array([[(b, s) for s in levels] for b in levels], dtype=np.float32)  # [8, 8, 2]
    image1 = torch.from_numpy(grid[..., 0]).unsqueeze(-1).expand(8, 8, 3).unsqueeze(0).contiguous()
    image2 = torch.from_numpy(grid[..., 1]).unsqueeze(-1).expand(8, 8, 3).unsqueeze(0).contiguous()
    out = ImageBlend().run(None, image1, image2, factor, mode)[0]
    assert out.shape == (1, 8, 8, 3)
    want = np.array([[min(1.0, max(0.0, b * (1 - factor) + BLEND_REFERENCE[mode](b, s) * factor))
                      for b, s in row] for row in grid.tolist()])
    assert np.allclose(out[0, ..., 1].numpy(), want, atol=1e-6)


def test_blend_resizes_image2_and_checks_batches():
    image1 = torch.zeros(2, 4, 4, 3)
    image2 = torch.ones(1, 2, 2, 3)
    out = ImageBlend().run(None, image1, image2, 0.5, "normal")[0]
    assert out.shape == (2, 4, 4, 3) and torch.allclose(out, torch.full_like(out, 0.5))
    with pytest.raises(ValueError, match="image1 has a batch of 2 and image2 of 3"):
        ImageBlend().run(None, image1, torch.ones(3, 4, 4, 3), 0.5, "normal")


def _gaussian_reference(image, radius, sigma):
    """Direct 2-D convolution with exp(-(dx^2 + dy^2) / (2 (sigma * radius)^2)), normalised, edges mirrored."""
    std = sigma * radius
    offsets = range(-radius, radius + 1)
    kernel = np.array([[math.exp(-(dx * dx + dy * dy) / (2 * std * std)) for dx in offsets] for dy in offsets])
    kernel /= kernel.sum()
    out = np.zeros_like(image, dtype=np.float64)
    for b in range(image.shape[0]):
        for c in range(image.shape[3]):
            padded = np.pad(image[b, :, :, c].astype(np.float64), radius, mode="reflect")
            for y in range(image.shape[1]):
                for x in range(image.shape[2]):
                    out[b, y, x, c] = (padded[y:y + 2 * radius + 1, x:x + 2 * radius + 1] * kernel).sum()
    return out


@pytest.mark.parametrize("radius,sigma,size", [(1, 1.0, (7, 9)), (3, 0.5, (8, 6)), (4, 2.0, (3, 5))])
def test_blur_matches_a_direct_gaussian(radius, sigma, size):
    image = np.random.default_rng(radius).random((2, *size, 3)).astype(np.float32)
    out = ImageBlur().run(None, torch.from_numpy(image), radius, sigma)[0]
    assert out.shape == image.shape and out.dtype == torch.float32
    assert np.allclose(out.numpy(), _gaussian_reference(image, radius, sigma), atol=1e-5)


def test_blur_keeps_flat_images_and_spreads_an_impulse():
    flat = torch.full((1, 5, 5, 3), 0.3)
    assert torch.allclose(ImageBlur().run(None, flat, 31, 1.0)[0], flat)  # radius far beyond the image
    impulse = torch.zeros(1, 9, 9, 1)
    impulse[0, 4, 4, 0] = 1.0
    out = ImageBlur().run(None, impulse, 2, 1.0)[0][0, ..., 0]
    assert math.isclose(float(out.sum()), 1.0, rel_tol=1e-5)
    assert float(out[4, 4]) == float(out.max()) and torch.allclose(out, out.T) and torch.allclose(out, out.flip(0))


@pytest.mark.parametrize("radius,sigma,alpha", [(1, 1.0, 1.0), (2, 0.7, 0.15)])
def test_sharpen_is_unsharp_masking(radius, sigma, alpha):
    image = np.random.default_rng(7).random((1, 6, 7, 3)).astype(np.float32)
    out = ImageSharpen().run(None, torch.from_numpy(image), radius, sigma, alpha)[0]
    blurred = _gaussian_reference(image, radius, sigma)
    want = np.clip(image + 10 * alpha * (image - blurred), 0.0, 1.0)
    assert np.allclose(out.numpy(), want, atol=1e-5)
    assert torch.equal(ImageSharpen().run(None, torch.from_numpy(image), radius, sigma, 0.0)[0],
                       torch.from_numpy(image))


def test_bayer_matrices():
    assert np.array_equal(bayer_matrix(2), [[0, 2], [3, 1]])
    for n in (2, 4, 8, 16):
        m = bayer_matrix(n)
        assert m.shape == (n, n) and sorted(m.ravel().tolist()) == list(range(n * n))
        # each 2x2 quadrant step: the n/2 matrix times 4 plus a constant offset
        half = bayer_matrix(n // 2) if n > 2 else np.zeros((1, 1), int)
        assert np.array_equal(m[: n // 2, : n // 2], 4 * half)
    with pytest.raises(ValueError, match="power-of-two"):
        bayer_matrix(3)
    offsets = ordered_dither_offsets(5, 6, 2, 0.5)
    assert offsets.shape == (5, 6)
    assert np.allclose(offsets[:2, :2], ((np.array([[0, 2], [3, 1]]) + 0.5) / 4 - 0.5) * 0.5)
    assert np.allclose(offsets[2:4, 4:6], offsets[:2, :2])


def test_palette_spacing():
    greys = np.array([[0, 0, 0], [51, 51, 51], [102, 102, 102], [255, 255, 255]], np.uint8)
    # nearest-neighbour steps 0.2, 0.2, 0.2, 0.6: the median is 0.2
    assert math.isclose(palette_spacing(greys), 0.2)
    reds = np.array([[0, 9, 9], [85, 9, 9], [170, 9, 9]], np.uint8)
    assert math.isclose(palette_spacing(reds), 85 / 255)
    assert palette_spacing(greys[:1]) == 0.0


def _palette(image_u8, colors):
    quantized = Image.fromarray(image_u8, "RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    raw = np.array(quantized.getpalette()[: 3 * 256], dtype=np.float32).reshape(-1, 3)
    used = np.unique(np.asarray(quantized).ravel())
    return raw[used] / 255.0


def test_quantize_without_dither_maps_to_the_nearest_palette_colour():
    rng = np.random.default_rng(0)
    image = rng.random((1, 6, 8, 3)).astype(np.float32)
    image_u8 = np.round(image[0] * 255).astype(np.uint8)
    out = ImageQuantize().run(None, torch.from_numpy(image_u8.astype(np.float32)[None] / 255.0), 4, "none")[0]
    palette = _palette(image_u8, 4)
    assert len(palette) <= 4
    pixels = image_u8.reshape(-1, 3).astype(np.float32) / 255.0
    distances = ((pixels[:, None, :] - palette[None]) ** 2).sum(-1)
    nearest = palette[distances.argmin(1)]
    assert np.allclose(out[0].numpy().reshape(-1, 3), nearest, atol=1e-6)


def test_quantize_with_enough_colours_is_lossless():
    levels = torch.tensor([0.0, 64.0, 128.0, 255.0]) / 255.0
    image = levels[torch.randint(0, 4, (2, 5, 5))].unsqueeze(-1).expand(2, 5, 5, 3).contiguous()
    for dither in DITHER_MODES:
        if dither.startswith("bayer"):
            continue  # ordered dithering shifts every pixel by design
        assert torch.allclose(ImageQuantize().run(None, image, 8, dither)[0], image, atol=1e-6)


def _grey_gradient():
    """Rows of constant grey from 0 to 1 (top to bottom): dithering must mix palette colours along each row."""
    ramp = torch.linspace(0.0, 1.0, 256).view(1, 256, 1, 1)
    return ramp.expand(1, 256, 32, 3).contiguous()


@pytest.mark.parametrize("dither", ["floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"])
def test_dithering_preserves_mean_brightness_better_than_none(dither):
    image = _grey_gradient()
    plain = ImageQuantize().run(None, image, 2, "none")[0]
    dithered = ImageQuantize().run(None, image, 2, dither)[0]
    palette = set(plain[0, ..., 0].unique().tolist())
    assert set(dithered[0, ..., 0].unique().tolist()) <= palette and len(palette) == 2
    low, high = sorted(palette)
    # means over 16-row x 32-column blocks (whole Bayer tiles), for blocks of greys between the two palette colours
    block = lambda out: out[0, ..., 0].reshape(16, 16 * 32).mean(1)  # noqa: E731
    grey = block(image)
    between = (grey > low + 0.02) & (grey < high - 0.02)
    assert between.sum() >= 5
    error = lambda out: (block(out) - grey)[between].abs().mean()  # noqa: E731
    assert error(dithered) < 0.4 * error(plain)
    if dither.startswith("bayer"):
        n = int(dither.split("-")[1])
        rows = dithered[0, ..., 0]
        assert torch.equal(rows[:, : 32 - n], rows[:, n:])  # ordered dither repeats every n columns
        assert not torch.equal(rows[:, : 32 - 1], rows[:, 1:])


def test_quantize_keeps_alpha_and_checks_inputs():
    image = torch.rand(1, 4, 4, 4)
    out = ImageQuantize().run(None, image, 2, "none")[0]
    assert torch.equal(out[..., 3], image[..., 3])
    assert len({tuple(p) for p in out[0, ..., :3].reshape(-1, 3).tolist()}) <= 2
    with pytest.raises(ValueError, match="colors must be between 1 and 256"):
        ImageQuantize().run(None, image, 0, "none")
    with pytest.raises(ValueError, match="image must be an IMAGE tensor"):
        ImageQuantize().run(None, torch.rand(4, 4, 3), 2, "none")


def test_nearest_colours_in_chunks_and_a_one_colour_palette():
    pixels = np.array([[0, 0, 0], [200, 10, 10], [90, 90, 90], [250, 250, 250], [120, 130, 140]], np.uint8)
    palette = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0]], np.uint8)
    want = [[0, 0, 0], [255, 0, 0], [0, 0, 0], [255, 255, 255], [255, 255, 255]]
    assert nearest_colours(pixels, palette, chunk=2).tolist() == want
    image = torch.rand(1, 5, 5, 3)
    single = ImageQuantize().run(None, image, 1, "bayer-4")[0]
    assert torch.all(single == single[0, 0, 0])  # one palette colour: every pixel is it
