"""Sinusoidal embeddings: the UNet's timestep input and SDXL's size/crop micro-conditioning vector `y`."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import SDXL_TIME_ID_DIM


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[B] -> [B, dim] float32, cos half first (LDM order; diffusers' flip_sin_to_cos=True, freq_shift=0).

    Frequencies are exp(-ln(max_period) * i / half) for i < half; an odd `dim` gets a zero last column.
    Computed in float32 whatever the model dtype, because fp16 loses the phase of large timesteps.
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timesteps.device)
                      * (-math.log(max_period) / half))
    args = timesteps.reshape(-1, 1).float() * freqs.unsqueeze(0)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def sdxl_vector_input(pooled: torch.Tensor, time_ids: torch.Tensor,
                      id_dim: int = SDXL_TIME_ID_DIM) -> torch.Tensor:
    """SDXL's `y`: concat(pooled [B, P], each time id embedded to `id_dim` dims and flattened).

    Base uses 6 ids (orig h, w, crop top, left, target h, w) -> 1280 + 1536 = 2816; the refiner 5 ids
    (orig h, w, crop top, left, aesthetic score) -> 1280 + 1280 = 2560.
    """
    b = pooled.shape[0]
    ids = time_ids.reshape(b, -1)
    emb = timestep_embedding(ids.reshape(-1), id_dim).reshape(b, -1)
    return torch.cat([pooled.float(), emb], dim=-1).to(pooled.dtype)
