"""`comfy.float`: casting weights to a lower precision with stochastic rounding (used when writing fp8 weights).

Stochastic rounding picks, for each value, one of the two representable neighbours around it, the upper with
probability equal to the value's distance from the lower one in units of the gap, so the rounded tensor is
unbiased on average (plain round-to-nearest biases sums of small updates). The draws come from a generator seeded
with `seed`, so a call is reproducible; they are this implementation's own (not ComfyUI's random stream), so
individual fp8 values may land on the other neighbour than ComfyUI would put them on, with the same distribution.
Values beyond the fp8 range are clamped to its largest finite value, as a saturating cast does.
"""
from __future__ import annotations

import torch

FP8_TYPES = tuple(t for t in (getattr(torch, "float8_e4m3fn", None), getattr(torch, "float8_e5m2", None)) if t)


def _grid(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every finite value of an 8-bit float type, ascending, as float32."""
    values = torch.arange(256, dtype=torch.int16).to(torch.uint8).view(dtype).float()
    return torch.unique(values[torch.isfinite(values)]).to(device)


def manual_stochastic_round_to_float8(x: torch.Tensor, dtype: torch.dtype, generator: torch.Generator = None):
    """`x` stochastically rounded onto `dtype`'s grid (returned in float32, exactly representable in `dtype`)."""
    if dtype not in FP8_TYPES:
        raise ValueError(f"unsupported dtype {dtype}: expected one of {FP8_TYPES}")
    grid = _grid(dtype, x.device)
    flat = x.float().reshape(-1).clamp(grid[0], grid[-1])
    upper = torch.searchsorted(grid, flat).clamp(max=len(grid) - 1)
    lower = (upper - 1).clamp(min=0)
    hi, lo = grid[upper], grid[lower]
    exact = hi == flat
    gap = torch.where(exact, torch.ones_like(hi), hi - lo)
    frac = torch.where(exact, torch.zeros_like(flat), (flat - lo) / gap)
    draws = torch.rand(flat.shape, generator=generator, device=x.device)
    rounded = torch.where(exact, hi, torch.where(draws < frac, hi, lo))
    return rounded.reshape(x.shape)


def stochastic_rounding(value: torch.Tensor, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """`value` in `dtype`: fp8 types stochastically rounded with a generator seeded by `seed`; other dtypes by a
    plain cast."""
    if dtype not in FP8_TYPES:
        return value.to(dtype=dtype)
    generator = torch.Generator(device=value.device)
    generator.manual_seed(seed)
    return manual_stochastic_round_to_float8(value, dtype, generator=generator).to(dtype)
