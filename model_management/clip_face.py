"""ComfyUI's CLIP interface on our CLIP object (TextEncoderModel), for node packs.

Packs tokenize and encode in two steps: `tokens = clip.tokenize(text)` gives, per encoder, windows of
`(token, weight)` pairs under ComfyUI's keys ("l" for CLIP-L, "g" for bigG, "h" for SD2's OpenCLIP-H), which
they may edit (re-weight, splice, pad) before `clip.encode_from_tokens(tokens, return_pooled=True)`. Our own
windows (diffusion/text/prompt_weights.TokenWindow) carry the same tokens and weights, so both directions are a
change of shape only, and encoding runs through the engine's own stack (weighting against the empty prompt,
CLIP skip, LoRA patches, residency) exactly as CLIPTextEncode does.

`clip.tokenizer` and `clip.cond_stage_model` are views whose classes carry ComfyUI's names per family
(SD1Tokenizer / SDXLTokenizer, SD1ClipModel / SDXLClipModel / SDXLRefinerClipModel; SDXLClipG for bigG), so
`isinstance` checks in packs tell the families apart; compat's comfy.sd1_clip / comfy.sdxl_clip export them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from model_management.device_face import DeviceFace
from model_management.patcher_face import key_patches, record_comfy_patches

ROLE_KEYS = {"clip_l": "l", "clip_g": "g", "clip_h": "h"}
KEY_ROLES = {key: role for role, key in ROLE_KEYS.items()}


def windows_to_tokens(windows: List[Any], word_ids: bool = False) -> List[List[tuple]]:
    """Our windows -> ComfyUI's: (token, weight) pairs, or (token, weight, word id) triples."""
    if word_ids:
        return [list(zip(window.tokens, window.weights, window.word_ids)) for window in windows]
    return [list(zip(window.tokens, window.weights)) for window in windows]


def tokens_to_windows(pairs: List[List[tuple]], end_id: int) -> List[Any]:
    """ComfyUI windows [(token, weight[, word_id]), ...] -> our TokenWindows (end index: the first end token)."""
    from diffusion.text.prompt_weights import TokenWindow  # noqa: PLC0415 - diffusion is below us

    windows = []
    for window in pairs:
        tokens = [pair[0] for pair in window]
        weights = [float(pair[1]) for pair in window]
        end = next((i for i, t in enumerate(tokens) if isinstance(t, int) and t == end_id and i > 0),
                   len(tokens) - 1)
        windows.append(TokenWindow(tokens, weights, end))
    return windows


# -- tokenizers ---------------------------------------------------------------------------------------------------------
class SDTokenizer:
    """One encoder's tokenizer (ComfyUI's SDTokenizer): `tokenize_with_weights(text)` -> windows of pairs."""

    def __init__(self, clip: Any, role: str) -> None:
        self._clip, self.role = clip, role

    def _encoder(self) -> Any:
        return next(e for e in self._clip.stack.encoders if e.role == self.role)

    @property
    def max_length(self) -> int:
        return self._encoder().window

    @property
    def start_token(self) -> int:
        return self._clip.stack.tokenizer.start_id

    @property
    def end_token(self) -> int:
        return self._clip.stack.tokenizer.end_id

    @property
    def pad_token(self) -> int:
        return self._encoder().pad_id

    @property
    def pad_with_end(self) -> bool:
        return self.pad_token == self.end_token

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **_: Any) -> List[List[tuple]]:
        return self._clip.tokenize(text, return_word_ids)[ROLE_KEYS[self.role]]

    def untokenize(self, token_weight_pair: List[tuple]) -> List[tuple]:
        vocab = self._clip.stack.tokenizer
        return [(pair, vocab.token_text(pair[0]) if isinstance(pair[0], int) else None) for pair in token_weight_pair]


class _FamilyTokenizer:
    """The tokenizer of a family: one SDTokenizer per encoder, as attributes `clip_l` / `clip_g` / `clip_h`."""

    def __init__(self, clip: Any) -> None:
        self._clip = clip
        for enc in clip.stack.encoders:
            setattr(self, enc.role, SDTokenizer(clip, enc.role))

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **_: Any) -> Dict[str, list]:
        return self._clip.tokenize(text, return_word_ids)

    def untokenize(self, token_weight_pair: List[tuple]) -> List[tuple]:
        first = next(iter(vars(self).values()))
        return first.untokenize(token_weight_pair) if isinstance(first, SDTokenizer) else []

    def __getattr__(self, name: str) -> Any:  # end_token, pad_with_end, ... of the first encoder
        if name.startswith("_"):
            raise AttributeError(name)
        first = getattr(self._clip, "stack").encoders[0].role
        return getattr(self.__dict__[first], name)


class SD1Tokenizer(_FamilyTokenizer):
    pass


class SD2Tokenizer(SD1Tokenizer):
    pass


class SDXLTokenizer(_FamilyTokenizer):
    pass


# -- text encoders --------------------------------------------------------------------------------------------------
class SDClipModel:
    """One encoder as ComfyUI names it; `set_clip_options({"layer": n})` picks the CLIP skip layer for encodes
    made through it (other options, such as the execution device, are the residency manager's decision)."""

    def __init__(self, clip: Any, role: Optional[str] = None) -> None:
        self._clip, self.role = clip, role
        self.options: Dict[str, Any] = {}

    @property
    def layer_idx(self) -> Optional[int]:
        return self._clip.clip_skip

    def set_clip_options(self, options: dict) -> None:
        self.options.update(options)
        if options.get("layer") is not None:
            self._clip.clip_skip = int(options["layer"])

    def reset_clip_options(self) -> None:
        self.options.clear()

    def encode_token_weights(self, token_weight_pairs: Any) -> tuple:
        """(cond, pooled) of (token, weight) windows: through this one encoder when it is a part of a stack
        (`cond_stage_model.clip_l` / `.clip_g`: cond as wide as that encoder), else through them all."""
        if self.role is None:
            tokens = token_weight_pairs if isinstance(token_weight_pairs, dict) else {
                ROLE_KEYS[self._clip.stack.encoders[0].role]: token_weight_pairs}
            return self._clip.encode_from_tokens(tokens, return_pooled=True)
        pairs = token_weight_pairs.get(ROLE_KEYS[self.role]) if isinstance(token_weight_pairs, dict) \
            else token_weight_pairs
        if pairs is None:
            raise ValueError(f"encode_token_weights: tokens for {self.role} (key {ROLE_KEYS[self.role]!r}) missing")
        end_id = self._clip.stack.tokenizer.end_id
        return self._clip.encode_windows({self.role: tokens_to_windows(pairs, end_id)}, roles=[self.role])


class SD1ClipModel(SDClipModel):
    pass


class SD2ClipModel(SD1ClipModel):
    pass


class SDXLClipG(SDClipModel):
    pass


class SDXLClipModel(SDClipModel):
    def __init__(self, clip: Any) -> None:
        super().__init__(clip)
        self.clip_l = SDClipModel(clip, "clip_l")
        self.clip_g = SDXLClipG(clip, "clip_g")


class SDXLRefinerClipModel(SDClipModel):
    def __init__(self, clip: Any) -> None:
        super().__init__(clip)
        self.clip_g = SDXLClipG(clip, "clip_g")


_TOKENIZERS = {"sd1": SD1Tokenizer, "sd2": SD2Tokenizer, "sdxl": SDXLTokenizer, "sdxl_refiner": SDXLTokenizer}
_MODELS = {"sd1": SD1ClipModel, "sd2": SD2ClipModel, "sdxl": SDXLClipModel, "sdxl_refiner": SDXLRefinerClipModel}


class CLIPFace(DeviceFace):
    """Mixin for TextEncoderModel: ComfyUI's CLIP methods. Needs `stack`, `family_name`, `clip_skip` and
    `encode_windows(windows)` from the class."""

    def tokenize(self, text: str, return_word_ids: bool = False, **_: Any) -> Dict[str, list]:
        """Per encoder key ("l", "g", "h"): windows of (token, weight) pairs, with the prompt's weights; with
        `return_word_ids`, (token, weight, word id) triples, the id numbering the prompt's weighted segments from 1
        (0 for start, end and padding), as ComfyUI numbers them."""
        windows = self.stack.tokenize(text, [])
        return {ROLE_KEYS[role]: windows_to_tokens(ws, return_word_ids) for role, ws in windows.items()}

    def encode_from_tokens(self, tokens: Dict[str, list], return_pooled: Any = False,
                           return_dict: bool = False) -> Any:
        """Encode (possibly edited) tokens: cond, or (cond, pooled), or {"cond", "pooled_output"}."""
        stack = self.stack
        end_id = stack.tokenizer.end_id
        windows: Dict[str, list] = {}
        for enc in stack.encoders:
            key = ROLE_KEYS[enc.role]
            if key not in tokens:
                raise ValueError(f"encode_from_tokens: this {self.family_name} CLIP needs tokens under {key!r}, "
                                 f"got {sorted(tokens)}")
            windows[enc.role] = tokens_to_windows(tokens[key], end_id)
        cond, pooled = self.encode_windows(windows)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens: Dict[str, list], unprojected: bool = False,
                                     add_dict: Optional[dict] = None, show_pbar: bool = True) -> list:
        """CONDITIONING from tokens."""
        cond, pooled = self.encode_from_tokens(tokens, return_pooled=True)
        return [[cond, {"pooled_output": pooled, **(add_dict or {})}]]

    # -- weights, under ComfyUI's names ("clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight")
    def _comfy_names(self) -> Dict[str, str]:
        """ComfyUI key -> our parameter name, for every weight of the encoders."""
        names: Dict[str, str] = {}
        for index, enc in enumerate(self.stack.encoders):
            prefix = f"clip_{ROLE_KEYS[enc.role]}.transformer."
            for name, _ in enc.model.named_parameters():
                comfy = name if name.startswith(("text_model.", "text_projection")) else "text_model." + name
                names[prefix + comfy] = f"encoders.{index}.model.{name}"
        return names

    def add_patches(self, patches: Dict[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> List[str]:
        """Weight patches keyed by ComfyUI's CLIP names (or our own parameter names), in its forms (as
        MODEL.add_patches); returns the keys used. Like ComfyUI's, it changes this object: clone first."""
        names = self._comfy_names()
        ours = set(names.values())
        resolved = []
        for key, value in patches.items():
            name = names.get(key) or (key if key in ours else None)
            if name is not None:
                resolved.append((key, name, value))
        return record_comfy_patches(self.patches, resolved, strength_patch, strength_model)

    def model_state_dict(self, filter_prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
        params = dict(self.stack.named_parameters())
        return {key: params[name].detach() for key, name in self._comfy_names().items()
                if filter_prefix is None or key.startswith(filter_prefix)}

    def get_key_patches(self, filter_prefix: Optional[str] = None) -> Dict[str, Any]:
        """ComfyUI names -> `(weight,)`, or the weight followed by this clone's patches of it."""
        params = dict(self.stack.named_parameters())
        weights = ((key, name, params[name]) for key, name in self._comfy_names().items())
        return key_patches(self.patches, weights, filter_prefix)

    def clip_layer(self, layer_idx: int) -> None:
        """Set the CLIP skip layer on this object (ComfyUI mutates; CLIPSetLastLayer clones first)."""
        self.clip_skip = int(layer_idx)

    @property
    def layer_idx(self) -> Optional[int]:
        return self.clip_skip

    @property
    def tokenizer(self) -> Any:
        return _TOKENIZERS.get(self.family_name, SD1Tokenizer)(self)

    @property
    def cond_stage_model(self) -> Any:
        return _MODELS.get(self.family_name, SD1ClipModel)(self)

