"""`comfy.ldm.lumina.model`: Lumina's feed-forward block (SwiGLU), which packs wrap to chunk long sequences."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class FeedForward(nn.Module):
    """`w2(silu(w1(x)) * w3(x))`; the hidden width is 2/3 of `hidden_dim` (times `ffn_dim_multiplier`), rounded
    up to a multiple of `multiple_of`."""

    def __init__(self, dim: int, hidden_dim: int, multiple_of: int, ffn_dim_multiplier: Optional[float] = None,
                 operation_settings: Optional[dict] = None):
        super().__init__()
        settings = operation_settings or {}
        linear = getattr(settings.get("operations"), "Linear", nn.Linear)
        factory = {k: settings[k] for k in ("device", "dtype") if settings.get(k) is not None}
        hidden = int(2 * hidden_dim / 3)
        if ffn_dim_multiplier is not None:
            hidden = int(ffn_dim_multiplier * hidden)
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        self.w1 = linear(dim, hidden, bias=False, **factory)
        self.w2 = linear(hidden, dim, bias=False, **factory)
        self.w3 = linear(dim, hidden, bias=False, **factory)

    @staticmethod
    def _gate(x1: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(x1) * x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self._gate(self.w1(x), self.w3(x)))
