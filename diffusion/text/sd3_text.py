"""SD3's text side: CLIP-L, OpenCLIP bigG and T5-XXL, each optional, read into one conditioning as SD3 was trained.

- CLIP-L and bigG read the prompt as SDXL reads it (77-token windows, penultimate layer without the final norm) and
  are concatenated on the feature axis (768 + 1280), then zero-padded to T5's width (4096). A missing CLIP-L leaves
  zeros in its 768 columns; a missing bigG leaves the padding.
- T5 reads the whole prompt as one window (at least 77 tokens) and its tokens are appended after the CLIP tokens.
- pooled = CLIP-L's pooled output *before* its projection (768) next to bigG's projected one (1280); a missing
  encoder's part is zeros. With no CLIP at all the conditioning is T5's alone; with no encoder, zeros [1, 77, 4096].

The same rules serve TripleCLIPLoader (all three), DualCLIPLoader type sd3 (any two) and CLIPLoader type sd3 (T5
alone, or one CLIP), and single-file SD3 checkpoints with or without their bundled encoders.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .encoder_stack import EncoderStack

CLIP_L_WIDTH, CLIP_G_WIDTH, T5_WIDTH = 768, 1280, 4096  # what a missing encoder's zeros stand in for
ROLE_ORDER = ("clip_l", "clip_g", "t5xxl")


class SD3TextStack(EncoderStack):
    """The encoders SD3 has (any of clip_l, clip_g, t5xxl); `encode` gives (cond [1, T, 4096], pooled [1, 2048])
    with ClipTextStack's interface."""

    family = "sd3"
    ROLE_ORDER = ROLE_ORDER
    T5_MIN_TOKENS = 77

    @property
    def context_width(self) -> int:
        t5 = self.encoder("t5xxl")
        return t5.width if t5 is not None else T5_WIDTH

    @property
    def cond_dim(self) -> int:
        return self.context_width

    @torch.no_grad()
    def encode(self, prompt: Any, clip_skip: Optional[int] = None, warnings: Optional[List[str]] = None,
               roles: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prompt (text, or windows per role; an empty list leaves that encoder out) -> (cond, pooled), float32.
        `roles`: only those encoders, as ComfyUI's per-encoder models do."""
        windows = self._windows(prompt, warnings, roles)
        width = self.context_width
        cond: Optional[torch.Tensor] = None
        pooled: Optional[torch.Tensor] = None
        if windows.get("clip_l") or windows.get("clip_g"):
            l_out, l_pooled = self._encode_role("clip_l", windows, clip_skip, True)
            g_out, g_pooled = self._encode_role("clip_g", windows, clip_skip, True)
            l_pooled = l_pooled if l_pooled is not None else torch.zeros(1, CLIP_L_WIDTH)
            g_pooled = g_pooled if g_pooled is not None else torch.zeros(1, CLIP_G_WIDTH)
            if l_out is not None and g_out is not None:
                lg = torch.cat([l_out, g_out], dim=-1)
            elif g_out is not None:
                lg = nn.functional.pad(g_out, (CLIP_L_WIDTH, 0))
            else:
                lg = l_out
            if lg is not None:
                cond = nn.functional.pad(lg, (0, width - lg.shape[-1]))
            pooled = torch.cat([l_pooled, g_pooled], dim=-1)
        t5_out, _ = self._encode_role("t5xxl", windows, clip_skip, False)
        if t5_out is not None:
            cond = t5_out if cond is None else torch.cat([cond, t5_out], dim=-2)
        if cond is None:
            cond = torch.zeros(1, 77, width)
        if pooled is None:
            pooled = torch.zeros(1, CLIP_L_WIDTH + CLIP_G_WIDTH)
        return cond, pooled
