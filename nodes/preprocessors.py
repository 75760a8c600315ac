"""Built-in ControlNet preprocessors: Canny edges and a threshold line-art/scribble map, both in plain torch.

Canny (J. Canny, 1986): grayscale (Rec. 601 luma), 5x5 Gaussian blur (sigma 1), Sobel gradients (unnormalised
3x3 kernels, so a full-contrast step edge reaches a magnitude of about 3), non-maximum suppression along the
gradient direction quantised to 0/45/90/135 degrees, then double thresholding with hysteresis: pixels at or above
the high threshold are edges, and pixels at or above the low threshold become edges when connected (8-neighbour) to
an edge. Plateaus in NMS (two equal neighbours across a symmetric edge) keep exactly one pixel, so lines are one
pixel thin.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nodes.declare import Boolean, Float, Output, Socket, node

LUMA = (0.299, 0.587, 0.114)


def _gray(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """IMAGE [B, H, W, C] -> [B, 1, H, W] luma."""
    if not torch.is_tensor(image) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = list(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE [B, H, W, C] with 1, 3 or 4 channels, got {shape}")
    image = image.float()
    if image.shape[-1] == 1:
        return image.movedim(-1, 1)
    weights = torch.tensor(LUMA, dtype=image.dtype, device=image.device)
    return (image[..., :3] * weights).sum(-1, keepdim=True).movedim(-1, 1)


def _conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    pad = kernel.shape[-1] // 2
    return F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), kernel[None, None].to(x))


def gaussian_blur(x: torch.Tensor, size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return _conv(x, g[:, None] * g[None, :])


def sobel(x: torch.Tensor) -> tuple:
    """(gx, gy): horizontal and vertical derivatives (x to the right, y downwards)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return _conv(x, kx), _conv(x, kx.t().contiguous())


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x[..., i + dy, j + dx] with replicated borders."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def non_maximum_suppression(magnitude: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Magnitude where it is a local maximum across the edge, else 0.

    The direction is quantised to 4 sectors; a pixel survives when it is >= its neighbour on the positive side and
    > its neighbour on the negative side (the tie rule that keeps one pixel of a symmetric two-pixel ridge).
    """
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = (((angle + 22.5) // 45.0) % 4).long()  # 0: x, 1: 45 deg (down-right), 2: y, 3: 135 deg (down-left)
    # compare on a 1e-4 grid: the two sides of a symmetric edge differ only by float rounding, and must tie
    level = torch.round(magnitude * 1e4)
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        local = (level >= _shifted(level, dy, dx)) & (level > _shifted(level, -dy, -dx))
        keep |= (sector == index) & local
    return torch.where(keep, magnitude, torch.zeros_like(magnitude))


def hysteresis(strong: torch.Tensor, weak: torch.Tensor) -> torch.Tensor:
    """Grow `strong` (bool) into connected `weak` pixels (8-neighbourhood) until nothing changes."""
    edges = strong.clone()
    candidates = weak | strong
    while True:
        grown = (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0) & candidates
        if torch.equal(grown, edges):
            return edges
        edges = grown


def canny(image: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """IMAGE [B, H, W, C] -> edge map [B, 1, H, W] of 0.0 / 1.0."""
    gray = gaussian_blur(_gray(image))
    gx, gy = sobel(gray)
    magnitude = torch.sqrt(gx * gx + gy * gy + 1e-12)
    thin = non_maximum_suppression(magnitude, gx, gy)
    edges = hysteresis(thin >= high_threshold, thin >= low_threshold)
    return edges.float()


@node(category="image/preprocessors",
      outputs=[Output("IMAGE", tooltip="White one-pixel edges on black, for Canny ControlNets.")])
class Canny:
    """Find edges with the Canny detector (blur, gradients, thinning, hysteresis) to make a control image."""
    image = Socket("IMAGE", tooltip="The picture to find edges in.")
    low_threshold = Float(0.4, min=0.01, max=0.99, step=0.01,
                          tooltip="Weaker gradients down to this are kept when they connect to a strong edge.")
    high_threshold = Float(0.8, min=0.01, max=0.99, step=0.01,
                           tooltip="Gradients at least this strong are edges for certain.")

    def run(self, ctx, image, low_threshold, high_threshold):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must not exceed high_threshold ({high_threshold})")
        edges = canny(image, low_threshold, high_threshold)
        return (edges.movedim(1, -1).expand(-1, -1, -1, 3).contiguous().to(image.device),)


@node(category="image/preprocessors", display_name="Image to Line Art (threshold)",
      outputs=[Output("IMAGE", tooltip="A black-and-white line map (white lines on black).")])
class ImageToLineArt:
    """Turn a drawing or scribble into a clean line map for line-art/scribble ControlNets: grayscale, optionally
    invert (dark lines on light paper become white lines), then threshold to pure black and white."""
    image = Socket("IMAGE", tooltip="The drawing or scribble.")
    threshold = Float(0.5, min=0.0, max=1.0, step=0.01,
                      tooltip="Brightness (after inverting) above which a pixel becomes a white line.")
    invert = Boolean(True, tooltip="Invert first: on for dark lines on a light background, off for light lines.")

    def run(self, ctx, image, threshold, invert):
        if not math.isfinite(threshold) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        gray = _gray(image)
        if invert:
            gray = 1.0 - gray
        lines = (gray > threshold).float()
        return (lines.movedim(1, -1).expand(-1, -1, -1, 3).contiguous().to(image.device),)


NODES = [Canny, ImageToLineArt]
