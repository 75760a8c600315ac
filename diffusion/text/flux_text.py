"""Flux.1's text side: T5-XXL's tokens are the conditioning, CLIP-L's pooled output the vector.

The prompt goes to both encoders. T5 reads it as one window of at least 256 tokens (no start token, `</s>`, then
`<pad>`), its last layer's output is what the transformer attends to; CLIP-L reads its 77-token windows and only
its pooled output is used -- the end token's final-normed hidden state *before* the text projection (768 wide),
from the first window. CLIPTextEncodeFlux gives each encoder its own prompt.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch

from .encoder_stack import EncoderStack

CLIP_L_WIDTH = 768


class FluxTextStack(EncoderStack):
    """CLIP-L and T5-XXL; `encode` gives (cond [1, T, 4096], pooled [1, 768])."""

    family = "flux"
    ROLE_ORDER = ("clip_l", "t5xxl")
    T5_MIN_TOKENS = 256

    def __init__(self, encoders, tokenizer=None, embeddings=None):
        super().__init__(encoders, tokenizer, embeddings)
        if self.encoder("t5xxl") is None:
            raise ValueError("Flux needs T5-XXL (with CLIP-L): load both, e.g. with DualCLIPLoader type flux")

    @property
    def cond_dim(self) -> int:
        return self.encoder("t5xxl").width

    @torch.no_grad()
    def encode(self, prompt: Any, clip_skip: Optional[int] = None, warnings: Optional[List[str]] = None,
               roles: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        windows = self._windows(prompt, warnings, roles)
        cond, _ = self._encode_role("t5xxl", windows, clip_skip, False)
        _, pooled = self._encode_role("clip_l", windows, clip_skip, True)
        if cond is None:
            cond = torch.zeros(1, self.T5_MIN_TOKENS, self.cond_dim)
        if pooled is None:
            pooled = torch.zeros(1, CLIP_L_WIDTH)
        return cond, pooled
