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

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .clip_encoders import FAMILIES, ClipTextEncoder, encode_weighted
from .prompt_weights import TokenWindow, empty_window, tokenize_unwindowed, tokenize_weighted
from .t5_encoder import T5TextEncoder
from .t5_tokenizer import default_t5_tokenizer
from .tokenizer import ClipTokenizer, default_tokenizer

# where single-file SD3 checkpoints keep their text encoders (all in transformers' layout)
SD3_TEXT_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                     "t5xxl": "text_encoders.t5xxl.transformer."}
CLIP_L_WIDTH, CLIP_G_WIDTH, T5_WIDTH = 768, 1280, 4096  # what a missing encoder's zeros stand in for
ROLE_ORDER = ("clip_l", "clip_g", "t5xxl")


class SD3TextStack(nn.Module):
    """The encoders SD3 has (any of clip_l, clip_g, t5xxl); `encode` gives (cond [1, T, 4096], pooled [1, 2048])
    with ClipTextStack's interface."""

    family = "sd3"

    def __init__(self, encoders: Sequence[nn.Module], tokenizer: Optional[ClipTokenizer] = None,
                 embeddings: Optional[Any] = None):
        super().__init__()
        by_role = {e.role: e for e in encoders}
        if len(by_role) != len(encoders) or not set(by_role) <= set(ROLE_ORDER):
            raise ValueError(f"SD3 takes at most one each of {', '.join(ROLE_ORDER)}; got "
                             f"{', '.join(e.role for e in encoders)}")
        self.encoders = nn.ModuleList(by_role[r] for r in ROLE_ORDER if r in by_role)
        self.tokenizer = tokenizer or default_tokenizer()
        self.t5_tokenizer = default_t5_tokenizer()
        self.embeddings = embeddings

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_role_weights(cls, states: Dict[str, Dict[str, torch.Tensor]], dtype: Optional[torch.dtype] = None,
                          device=None, embeddings: Optional[Any] = None) -> "SD3TextStack":
        """From each present encoder's weights by role (transformers layout, prefix removed)."""
        tokenizer = default_tokenizer()
        settings = {s.role: s for s in FAMILIES["sd3"]}
        encoders: List[nn.Module] = []
        for role in ROLE_ORDER:
            state = states.get(role)
            if not state:
                continue
            if role == "t5xxl":
                encoders.append(T5TextEncoder.from_weights(state, dtype=dtype, device=device))
            else:
                encoders.append(ClipTextEncoder.from_weights(state, settings[role], dtype=dtype, device=device,
                                                             end_id=tokenizer.end_id))
        if not encoders:
            raise ValueError("no SD3 text encoder weights (clip_l, clip_g or t5xxl) found")
        return cls(encoders, tokenizer, embeddings)

    @classmethod
    def from_checkpoint(cls, state: Dict[str, torch.Tensor], **kwargs) -> "SD3TextStack":
        """From a single-file SD3 checkpoint's `text_encoders.*` keys."""
        states = {role: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                  for role, prefix in SD3_TEXT_PREFIXES.items()}
        return cls.from_role_weights(states, **kwargs)

    # -- information -----------------------------------------------------------------------------------------------
    def encoder(self, role: str) -> Optional[nn.Module]:
        return next((e for e in self.encoders if e.role == role), None)

    @property
    def roles(self) -> List[str]:
        return [e.role for e in self.encoders]

    @property
    def context_width(self) -> int:
        t5 = self.encoder("t5xxl")
        return t5.width if t5 is not None else T5_WIDTH

    @property
    def cond_dim(self) -> int:
        return self.context_width

    @property
    def pooled_encoder(self) -> Optional[nn.Module]:
        return self.encoder("clip_g") or self.encoder("clip_l")

    def load_report(self) -> Dict[str, Dict[str, object]]:
        return {e.role: {"layout": e.layout, "ignored": list(e.ignored_keys), "unused": list(e.unused_keys)}
                for e in self.encoders}

    # -- tokenize / encode -----------------------------------------------------------------------------------------
    def tokenize(self, text: str, warnings: Optional[List[str]] = None) -> Dict[str, List[TokenWindow]]:
        """Windows per role: CLIP's 77-token windows, T5's one window."""
        warnings = warnings if warnings is not None else []
        out: Dict[str, List[TokenWindow]] = {}
        first = True
        for enc in self.encoders:
            lookup = self.embeddings.lookup(enc.role, enc.width, True) if self.embeddings is not None else None
            sink = warnings if first else []
            if enc.role == "t5xxl":
                # textual-inversion files hold CLIP vectors: T5 leaves `embedding:name` out, as ComfyUI does
                lookup = (lambda name: None) if self.embeddings is not None else None
                out[enc.role] = [tokenize_unwindowed(text, self.t5_tokenizer, lookup, warnings=sink)]
            else:
                out[enc.role] = tokenize_weighted(text, self.tokenizer, lookup, pad_token=enc.pad_id,
                                                  window=enc.window, warnings=sink)
            first = False
        return out

    def _empty(self, enc: nn.Module, length: int) -> TokenWindow:
        if enc.role == "t5xxl":
            return enc.empty_window(length)
        return empty_window(self.tokenizer.start_id, self.tokenizer.end_id, enc.pad_id, enc.window)

    def _encode_role(self, role: str, windows: Dict[str, List[TokenWindow]], clip_skip: Optional[int],
                     need_pooled: bool) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        enc = self.encoder(role)
        role_windows = windows.get(role) or []
        if enc is None or not role_windows:
            return None, None
        weighted = any(w.is_weighted for w in role_windows)
        empty = self._empty(enc, len(role_windows[0])) if weighted else None
        return encode_weighted(enc, role_windows, clip_skip, need_pooled, empty)

    @torch.no_grad()
    def encode(self, prompt: Any, clip_skip: Optional[int] = None, warnings: Optional[List[str]] = None,
               roles: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prompt (text, or windows per role; an empty list leaves that encoder out) -> (cond, pooled), float32.
        `roles`: only those encoders, as ComfyUI's per-encoder models do."""
        windows = self.tokenize(prompt, warnings) if isinstance(prompt, str) else dict(prompt)
        if roles is not None:
            unknown = [r for r in roles if self.encoder(r) is None]
            if unknown:
                raise ValueError(f"this SD3 CLIP has no {', '.join(unknown)} encoder; it has {', '.join(self.roles)}")
            windows = {r: w for r, w in windows.items() if r in roles}
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
