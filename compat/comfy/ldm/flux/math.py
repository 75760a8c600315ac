"""`comfy.ldm.flux.math`: rotary position embedding as Flux-family models apply it (packs patch their attention with
these). Rotations are 2x2 matrices per frequency, `freqs_cis[..., i, j]`, acting on consecutive pairs of channels."""
from __future__ import annotations

from typing import Tuple

import torch


def rope(pos: torch.Tensor, dim: int, theta: int) -> torch.Tensor:
    """Rotation matrices [..., n, dim/2, 2, 2] for positions `pos` [..., n]: angle pos * theta^(-2i/dim)."""
    if dim % 2:
        raise ValueError(f"rope: dim must be even, got {dim}")
    scale = torch.arange(0, dim, 2, dtype=torch.float64, device=pos.device) / dim
    omega = 1.0 / (theta ** scale)
    angles = pos.to(torch.float64).unsqueeze(-1) * omega
    cos, sin = torch.cos(angles), torch.sin(angles)
    matrix = torch.stack([cos, -sin, sin, cos], dim=-1)
    return matrix.reshape(*angles.shape, 2, 2).float()


def apply_rope1(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair of `x` [..., d] by its matrix in `freqs_cis` [..., d/2, 2, 2]."""
    pairs = x.to(freqs_cis.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    rotated = freqs_cis[..., 0] * pairs[..., 0] + freqs_cis[..., 1] * pairs[..., 1]
    return rotated.reshape(*x.shape).type_as(x)


def apply_rope(xq: torch.Tensor, xk: torch.Tensor, freqs_cis: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys rotated alike."""
    return apply_rope1(xq, freqs_cis), apply_rope1(xk, freqs_cis)
