"""Text stacks of several kinds of encoder (CLIP and T5), each optional, for the diffusion transformers.

An `EncoderStack` holds one encoder per role (clip_l, clip_g, t5xxl) in its family's order and does what every
such family shares: building from weights per role (or a checkpoint's `text_encoders.<role>.transformer.` keys),
tokenizing a prompt for each encoder (CLIP's 77-token windows, T5's one window of at least `T5_MIN_TOKENS`), and
encoding one role with ComfyUI's emphasis. How the encoders' outputs become one conditioning is the family's:
`SD3TextStack` (sd3_text.py) and `FluxTextStack` (flux_text.py) define `encode`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .clip_encoders import FAMILIES, ClipTextEncoder, encode_weighted
from .prompt_weights import TokenWindow, empty_window, tokenize_unwindowed, tokenize_weighted
from .t5_encoder import T5TextEncoder
from .t5_tokenizer import default_t5_tokenizer
from .tokenizer import ClipTokenizer, default_tokenizer

# where single-file SD3 and Flux checkpoints keep their text encoders (all in transformers' layout)
TEXT_PREFIXES = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
                 "t5xxl": "text_encoders.t5xxl.transformer."}


class EncoderStack(nn.Module):
    """A family's encoders by role; subclasses set `family`, `ROLE_ORDER`, `T5_MIN_TOKENS` and `encode`."""

    family = ""
    ROLE_ORDER: Tuple[str, ...] = ()
    T5_MIN_TOKENS = 77

    def __init__(self, encoders, tokenizer: Optional[ClipTokenizer] = None, embeddings: Optional[Any] = None):
        super().__init__()
        by_role = {e.role: e for e in encoders}
        if len(by_role) != len(encoders) or not set(by_role) <= set(self.ROLE_ORDER):
            raise ValueError(f"{self.family} takes at most one each of {', '.join(self.ROLE_ORDER)}; got "
                             f"{', '.join(e.role for e in encoders)}")
        self.encoders = nn.ModuleList(by_role[r] for r in self.ROLE_ORDER if r in by_role)
        self.tokenizer = tokenizer or default_tokenizer()
        self.t5_tokenizer = default_t5_tokenizer()
        self.embeddings = embeddings

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_role_weights(cls, states: Dict[str, Dict[str, torch.Tensor]], dtype: Optional[torch.dtype] = None,
                          device=None, embeddings: Optional[Any] = None,
                          stored_t5: bool = False) -> "EncoderStack":
        """From each present encoder's weights by role (transformers layout, prefix removed). `stored_t5`: T5
        takes its tensors as they are (a memory-mapped file's views; cast as it runs, host_streaming.py)."""
        tokenizer = default_tokenizer()
        settings = {s.role: s for s in FAMILIES[cls.family]}
        encoders: List[nn.Module] = []
        for role in cls.ROLE_ORDER:
            state = states.get(role)
            if not state:
                continue
            if role == "t5xxl":
                encoders.append(T5TextEncoder.from_weights(state, dtype=None if stored_t5 else dtype, device=device))
            else:
                encoders.append(ClipTextEncoder.from_weights(state, settings[role], dtype=dtype, device=device,
                                                             end_id=tokenizer.end_id))
        if not encoders:
            raise ValueError(f"no {cls.family} text encoder weights ({', '.join(cls.ROLE_ORDER)}) found")
        return cls(encoders, tokenizer, embeddings)

    @classmethod
    def from_checkpoint(cls, state: Dict[str, torch.Tensor], **kwargs) -> "EncoderStack":
        """From a single-file checkpoint's `text_encoders.*` keys."""
        states = {role: {k[len(TEXT_PREFIXES[role]):]: v for k, v in state.items()
                         if k.startswith(TEXT_PREFIXES[role])} for role in cls.ROLE_ORDER}
        return cls.from_role_weights(states, **kwargs)

    # -- information -----------------------------------------------------------------------------------------------
    def encoder(self, role: str) -> Optional[nn.Module]:
        return next((e for e in self.encoders if e.role == role), None)

    @property
    def roles(self) -> List[str]:
        return [e.role for e in self.encoders]

    def _check_roles(self, roles) -> None:
        unknown = [r for r in roles if self.encoder(r) is None]
        if unknown:
            raise ValueError(f"this {self.family} CLIP has no {', '.join(unknown)} encoder; it has "
                             f"{', '.join(self.roles)}")

    # -- tokenize / encode one role --------------------------------------------------------------------------------
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
                out[enc.role] = [tokenize_unwindowed(text, self.t5_tokenizer, lookup, min_length=self.T5_MIN_TOKENS,
                                                     warnings=sink)]
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
        """(hidden, pooled) of one role's windows; (None, None) when the stack lacks it or it has no windows."""
        enc = self.encoder(role)
        role_windows = windows.get(role) or []
        if enc is None or not role_windows:
            return None, None
        weighted = any(w.is_weighted for w in role_windows)
        empty = self._empty(enc, len(role_windows[0])) if weighted else None
        return encode_weighted(enc, role_windows, clip_skip, need_pooled, empty)

    def _windows(self, prompt: Any, warnings: Optional[List[str]], roles) -> Dict[str, List[TokenWindow]]:
        windows = self.tokenize(prompt, warnings) if isinstance(prompt, str) else dict(prompt)
        if roles is not None:
            self._check_roles(roles)
            windows = {r: w for r, w in windows.items() if r in roles}
        return windows
