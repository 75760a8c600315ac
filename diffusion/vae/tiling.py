"""Tiled VAE encode/decode: bounded memory for large images by running overlapping tiles and feathering them.

Each tile's output gets a weight that ramps linearly from ~0 at an edge it shares with a neighbour to 1 over the
width of that overlap, and 1 at the image border; the result is the weighted mean. Two neighbours therefore
cross-fade exactly (their weights sum to 1 across the overlap), so there is no seam, only a gradual hand-over.

The result is close to, not identical with, the untiled call: GroupNorm statistics and the mid-block attention are
global over whatever the network sees, and a tile sees less. A tile at least as large as the input gives exactly
the untiled result.

Tiles are laid out on the latent grid (so pixel tiles start on multiples of the downscale factor) and spread
evenly: every tile has the full size, neighbours overlap by at least the requested amount.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch

Progress = Optional[Callable[[int, int], None]]
Interrupt = Optional[Callable[[], object]]


def tile_spans(size: int, tile: int, overlap: int) -> list:
    """[(start, end)] covering 0..size with full-size tiles overlapping by >= `overlap`, spread evenly."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"tiling needs 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [(0, size)]
    n = 1 + math.ceil((size - tile) / (tile - overlap))
    starts = [round(i * (size - tile) / (n - 1)) for i in range(n)]
    return [(s, s + tile) for s in starts]


def _axis_weights(spans: list, index: int, scale: int) -> torch.Tensor:
    """1-D feather weights (in output units) for tile `index` of `spans`, given the output/grid `scale`."""
    start, end = spans[index]
    length = (end - start) * scale
    pos = torch.arange(length, dtype=torch.float32) + 0.5
    w = torch.ones(length, dtype=torch.float32)
    if index > 0:
        lead = (spans[index - 1][1] - start) * scale
        if lead > 0:
            w = torch.minimum(w, pos / lead)
    if index < len(spans) - 1:
        trail = (end - spans[index + 1][0]) * scale
        if trail > 0:
            w = torch.minimum(w, (length - pos) / trail)
    return w


def _check_interrupt(interrupt: Interrupt) -> None:
    # The callable may raise itself (e.g. a node context's check_interrupt) or return True to stop.
    if interrupt is not None and interrupt():
        raise InterruptedError("tiled VAE pass interrupted")


def _run_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grid: tuple, tile: int, overlap: int,
               in_scale: int, out_scale: int, progress: Progress, interrupt: Interrupt) -> torch.Tensor:
    """Apply `fn` tile by tile over a grid of `grid` cells and blend the outputs.

    A grid cell is `in_scale` input pixels and `out_scale` output pixels. The last tile on each axis takes the
    input up to its end, so input remainders smaller than a cell are seen just as by the untiled call.
    """
    gh, gw = grid
    spans_h, spans_w = tile_spans(gh, tile, overlap), tile_spans(gw, tile, overlap)
    total = len(spans_h) * len(spans_w)
    out = weight = None
    done = 0
    for iy, (y0, y1) in enumerate(spans_h):
        wy = _axis_weights(spans_h, iy, out_scale)
        for ix, (x0, x1) in enumerate(spans_w):
            _check_interrupt(interrupt)
            in_y1 = x.shape[-2] if y1 == gh else y1 * in_scale
            in_x1 = x.shape[-1] if x1 == gw else x1 * in_scale
            piece = fn(x[..., y0 * in_scale:in_y1, x0 * in_scale:in_x1])
            expect = ((y1 - y0) * out_scale, (x1 - x0) * out_scale)
            if tuple(piece.shape[-2:]) != expect:
                raise RuntimeError(f"tile produced spatial shape {tuple(piece.shape[-2:])}, expected {expect}")
            dtype = piece.dtype
            if total == 1:
                out = piece
            else:
                if out is None:
                    out = torch.zeros(*piece.shape[:-2], gh * out_scale, gw * out_scale,
                                      dtype=torch.float32, device=piece.device)
                    weight = torch.zeros(gh * out_scale, gw * out_scale, dtype=torch.float32, device=piece.device)
                w = (wy[:, None] * _axis_weights(spans_w, ix, out_scale)[None, :]).to(piece.device)
                ys, xs = slice(y0 * out_scale, y1 * out_scale), slice(x0 * out_scale, x1 * out_scale)
                out[..., ys, xs] += piece.float() * w
                weight[ys, xs] += w
            done += 1
            if progress is not None:
                progress(done, total)
    if total == 1:
        return out
    return (out / weight).to(dtype)


def decode_tiled(vae, latent: torch.Tensor, tile: int = 64, overlap: int = 16, progress: Progress = None,
                 interrupt: Interrupt = None) -> torch.Tensor:
    """`vae.decode` over overlapping latent tiles of `tile` x `tile` cells (overlap also in latent cells).

    Returns the same shape as `vae.decode(latent)`. `progress(done, total)` is called after each tile;
    `interrupt()` before each, and stops the pass by raising or by returning True (-> InterruptedError).
    """
    f = vae.downscale_factor
    grid = (latent.shape[-2], latent.shape[-1])
    return _run_tiled(vae.decode, latent, grid, tile, overlap, 1, f, progress, interrupt)


def encode_tiled(vae, pixels: torch.Tensor, tile: int = 512, overlap: int = 64, progress: Progress = None,
                 interrupt: Interrupt = None, **encode_kwargs) -> torch.Tensor:
    """`vae.encode` over overlapping pixel tiles; `tile` and `overlap` are in pixels, rounded down to multiples
    of the downscale factor (a tile is at least one latent cell).

    Returns the same shape as `vae.encode(pixels)`. Extra keyword arguments go to `vae.encode` (e.g. `sample`,
    `generator`; sampled tiles draw independent noise, so sampling is not seed-identical to the untiled call).
    """
    f = vae.downscale_factor
    h, w = pixels.shape[-2], pixels.shape[-1]
    if h < f or w < f:
        raise ValueError(f"encode_tiled: image {h}x{w} is smaller than the downscale factor {f}")
    grid = (h // f, w // f)
    tile_cells, overlap_cells = max(1, tile // f), overlap // f
    if overlap_cells >= tile_cells:
        raise ValueError(f"encode_tiled: overlap {overlap} must be smaller than tile {tile} "
                         f"(both in pixels, multiples of {f})")

    def encode(x: torch.Tensor) -> torch.Tensor:
        return vae.encode(x, **encode_kwargs)

    return _run_tiled(encode, pixels, grid, tile_cells, overlap_cells, f, 1, progress, interrupt)
