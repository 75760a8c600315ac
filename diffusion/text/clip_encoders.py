"""CLIP text encoders built from checkpoint weights, and the stack that turns a prompt into conditioning.

The networks are transformers' CLIPTextModel / CLIPTextModelWithProjection, configured from tensor shapes
(clip_keys). We drive their embedding, layers and final norm ourselves so that textual-inversion vectors can replace
token embeddings and the hidden state a model family reads can be taken where it wants it:

- SD1 (CLIP-L): the output of layer `clip_skip` (-1 = last) through the final layer norm.
- SD2 (OpenCLIP ViT-H): penultimate layer through the final norm by default.
- SDXL: CLIP-L and bigG penultimate layers WITHOUT the final norm, concatenated on the feature axis (768+1280);
  pooled = bigG last layer -> final norm -> end-token position -> text projection. The refiner has bigG alone.

Each 77-token window is encoded on its own and windows are concatenated on the token axis; the pooled output comes
from the first window. Weights act ComfyUI's way: z = (z - z_empty) * w + z_empty per token, z_empty being the
encoding of the empty prompt (computed only when some weight differs from 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .clip_keys import REFINER_TEXT_G, SD1_TEXT, SD2_TEXT, SDXL_TEXT_G, SDXL_TEXT_L

from .clip_keys import ConvertedWeights, convert_text_encoder, derive_text_config
from .prompt_weights import TokenWindow, embed_windows, empty_window, tokenize_weighted
from .tokenizer import ClipTokenizer, default_tokenizer

# OpenAI's CLIP-L was trained with quick_gelu, LAION's OpenCLIP towers (ViT-H, bigG) with exact gelu. The
# activation is not visible in the weights, so it follows the encoder's role (overridable).
ROLE_ACTIVATION = {"clip_l": "quick_gelu", "clip_h": "gelu", "clip_g": "gelu"}


@dataclass(frozen=True)
class RoleSettings:
    """How one family reads one encoder: padding id (None = end token), final norm on the hidden state, default
    CLIP skip."""
    role: str
    pad_id: Optional[int]
    norm_hidden: bool
    default_skip: int
    project_pooled: bool = True  # SD3 reads CLIP-L's pooled output before its text projection


FAMILIES: Dict[str, Tuple[RoleSettings, ...]] = {
    "sd1": (RoleSettings("clip_l", None, True, -1),),
    "sd2": (RoleSettings("clip_h", 0, True, -2),),
    "sdxl": (RoleSettings("clip_l", None, False, -2), RoleSettings("clip_g", 0, False, -2)),
    "sdxl_refiner": (RoleSettings("clip_g", 0, False, -2),),
    # SD3 and SD3.5: CLIP-L and bigG read as SDXL reads them, but CLIP-L's pooled output is taken unprojected
    "sd3": (RoleSettings("clip_l", None, False, -2, project_pooled=False), RoleSettings("clip_g", 0, False, -2)),
    # Flux: only CLIP-L's pooled output is used, unprojected (its hidden states, read as SD1 reads them, are not)
    "flux": (RoleSettings("clip_l", None, True, -1, project_pooled=False),),
}
CHECKPOINT_PREFIXES: Dict[str, Dict[str, str]] = {
    "sd1": {"clip_l": SD1_TEXT},
    "sd2": {"clip_h": SD2_TEXT},
    "sdxl": {"clip_l": SDXL_TEXT_L, "clip_g": SDXL_TEXT_G},
    "sdxl_refiner": {"clip_g": REFINER_TEXT_G},
}


def detect_text_family(state: Dict[str, torch.Tensor]) -> str:
    """The family whose text-encoder prefixes a checkpoint carries."""
    present = lambda prefix: any(k.startswith(prefix) for k in state)  # noqa: E731
    if present(SDXL_TEXT_L) and present(SDXL_TEXT_G):
        return "sdxl"
    if present(REFINER_TEXT_G):
        return "sdxl_refiner"
    if present(SD2_TEXT):
        return "sd2"
    if present(SD1_TEXT):
        return "sd1"
    raise ValueError("no text encoder found in the checkpoint (no cond_stage_model.* or conditioner.embedders.* keys)")


def _causal_mask(length: int, dtype: torch.dtype, device) -> torch.Tensor:
    mask = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype, device=device)
    return mask.triu(1)[None, None]


class ClipTextEncoder(nn.Module):
    """One CLIP text transformer plus how its family reads it."""

    def __init__(self, model: nn.Module, settings: RoleSettings, end_id: int,
                 converted: Optional[ConvertedWeights] = None):
        super().__init__()
        self.model = model
        self.settings = settings
        self.role = settings.role
        self.pad_id = end_id if settings.pad_id is None else settings.pad_id
        self.layout = converted.layout if converted else "hf"
        self.ignored_keys: List[str] = list(converted.ignored) if converted else []
        self.unused_keys: List[str] = list(converted.unused) if converted else []

    @classmethod
    def from_weights(cls, state: Dict[str, torch.Tensor], settings: RoleSettings, *, num_heads: Optional[int] = None,
                     hidden_act: Optional[str] = None, dtype: Optional[torch.dtype] = None, device=None,
                     end_id: int = 49407) -> "ClipTextEncoder":
        """Build from one encoder's weights (either layout, prefix removed). Sizes come from the shapes."""
        from transformers import CLIPTextModel, CLIPTextModelWithProjection

        converted = convert_text_encoder(state)
        act = hidden_act or ("gelu" if converted.layout == "openclip" else ROLE_ACTIVATION.get(settings.role, "gelu"))
        config = derive_text_config(converted, act, num_heads)
        sd = converted.state_dict
        if dtype is None:
            dtype = sd["text_model.embeddings.token_embedding.weight"].dtype
        if converted.has_projection:
            with torch.device("meta"):
                model = CLIPTextModelWithProjection(config)
        else:
            with torch.device("meta"):
                model = CLIPTextModel(config)
            sd = {k[len("text_model."):]: v for k, v in sd.items()}
        sd = {k: v.to(device=device or "cpu", dtype=dtype) for k, v in sd.items()}
        result = model.load_state_dict(sd, strict=False, assign=True)
        if result.missing_keys:
            raise ValueError(f"{settings.role} text encoder weights are incomplete; missing "
                             f"{', '.join(result.missing_keys[:6])}{' ...' if len(result.missing_keys) > 6 else ''}")
        converted.unused.extend(result.unexpected_keys)
        core = model.text_model if converted.has_projection else model
        positions = config.max_position_embeddings
        core.embeddings.register_buffer("position_ids", torch.arange(positions, device=device or "cpu")[None],
                                        persistent=False)
        model.eval().requires_grad_(False)
        return cls(model, settings, end_id, converted)

    # -- properties ------------------------------------------------------------------------------------------------
    @property
    def core(self) -> nn.Module:
        """The CLIPTextModel part (embeddings, encoder, final_layer_norm)."""
        return self.model.text_model if hasattr(self.model, "text_projection") else self.model

    @property
    def projection(self) -> Optional[nn.Linear]:
        return getattr(self.model, "text_projection", None)

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def window(self) -> int:
        return self.model.config.max_position_embeddings

    def check_skip(self, clip_skip: Optional[int]) -> int:
        skip = self.settings.default_skip if clip_skip is None else int(clip_skip)
        if not -self.num_layers <= skip <= -1:
            raise ValueError(f"clip_skip {clip_skip} is out of range for the {self.role} text encoder "
                             f"(-1 = last layer ... -{self.num_layers})")
        return skip

    # -- forward ---------------------------------------------------------------------------------------------------
    def input_embeddings(self, windows: Sequence[TokenWindow]) -> torch.Tensor:
        """Token embeddings [n, T, width], with textual-inversion vectors put in their slots."""
        return embed_windows(self.core.embeddings.token_embedding, windows, self.role)

    def forward(self, windows: Sequence[TokenWindow], clip_skip: Optional[int] = None,
                need_pooled: bool = True) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(hidden [n, T, width] as this family reads it, pooled [n, proj] or None)."""
        skip = self.check_skip(clip_skip)
        core = self.core
        x = self.input_embeddings(windows)
        length = x.shape[1]
        positions = torch.arange(length, device=x.device)
        x = x + core.embeddings.position_embedding(positions)[None]
        mask = _causal_mask(length, x.dtype, x.device)
        layers = core.encoder.layers
        take = len(layers) + 1 + skip  # how many layers produce the wanted hidden state (-1 -> all)
        stop = len(layers) if need_pooled else take
        hidden = x if take == 0 else None
        for i, layer in enumerate(layers[:stop]):
            x = layer(x, mask)
            if i + 1 == take:
                hidden = x
        if self.settings.norm_hidden:
            hidden = core.final_layer_norm(hidden)
        pooled = None
        if need_pooled:
            last = core.final_layer_norm(x)
            ends = torch.tensor([w.end_index for w in windows], device=x.device)
            pooled = last[torch.arange(len(windows), device=x.device), ends]
            if self.projection is not None and self.settings.project_pooled:
                pooled = self.projection(pooled)
        return hidden, pooled


PromptInput = Union[str, Sequence[TokenWindow], Dict[str, Sequence[TokenWindow]]]


class ClipTextStack(nn.Module):
    """A model family's text encoders (one or two), its tokenizer settings and its embeddings; `encode` gives
    (cond [1, 77*windows, dim], pooled [1, proj])."""

    def __init__(self, encoders: Sequence[ClipTextEncoder], family: str, tokenizer: Optional[ClipTokenizer] = None,
                 embeddings: Optional[Any] = None):
        super().__init__()
        if not encoders:
            raise ValueError("a text stack needs at least one encoder")
        self.encoders = nn.ModuleList(encoders)
        self.family = family
        self.tokenizer = tokenizer or default_tokenizer()
        self.embeddings = embeddings
        with_projection = [e for e in encoders if e.projection is not None]
        self.pooled_encoder: ClipTextEncoder = with_projection[-1] if with_projection else encoders[-1]

    # -- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, state: Dict[str, torch.Tensor], family: Optional[str] = None, **kwargs) -> "ClipTextStack":
        """From a single-file SD checkpoint's state dict (family detected from the key prefixes when not given).
        kwargs: num_heads, hidden_act, dtype, device (per encoder) and embeddings, tokenizer."""
        family = family or detect_text_family(state)
        prefixes = CHECKPOINT_PREFIXES[family]
        parts = []
        for settings in FAMILIES[family]:
            prefix = prefixes[settings.role]
            sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not sub:
                raise ValueError(f"{family} checkpoint has no {settings.role} text encoder under {prefix!r}")
            parts.append(sub)
        return cls.from_encoder_weights(parts, family, **kwargs)

    @classmethod
    def from_encoder_weights(cls, states: Sequence[Dict[str, torch.Tensor]], family: str, *,
                             num_heads: Optional[int] = None, hidden_act: Optional[str] = None,
                             dtype: Optional[torch.dtype] = None, device=None,
                             embeddings: Optional[Any] = None, tokenizer: Optional[ClipTokenizer] = None
                             ) -> "ClipTextStack":
        """From standalone text-encoder state dicts (HF `text_model.*` or OpenCLIP layout), one per encoder of the
        family in its order (sdxl: CLIP-L then bigG). `num_heads`/`hidden_act` may be a dict by role."""
        roles = FAMILIES[family]
        if len(states) != len(roles):
            raise ValueError(f"{family} takes {len(roles)} text encoder(s) ({', '.join(r.role for r in roles)}), "
                             f"got {len(states)}")
        tok = tokenizer or default_tokenizer()
        pick = lambda v, role: v.get(role) if isinstance(v, dict) else v  # noqa: E731
        encoders = [ClipTextEncoder.from_weights(sd, settings, num_heads=pick(num_heads, settings.role),
                                                 hidden_act=pick(hidden_act, settings.role), dtype=dtype,
                                                 device=device, end_id=tok.end_id)
                    for sd, settings in zip(states, roles)]
        return cls(encoders, family, tok, embeddings)

    # -- information -----------------------------------------------------------------------------------------------
    @property
    def roles(self) -> List[str]:
        return [e.role for e in self.encoders]

    @property
    def cond_dim(self) -> int:
        return sum(e.width for e in self.encoders)

    def load_report(self) -> Dict[str, Dict[str, object]]:
        """Per encoder: source layout, keys ignored on purpose, keys not understood (should be empty)."""
        return {e.role: {"layout": e.layout, "ignored": list(e.ignored_keys), "unused": list(e.unused_keys)}
                for e in self.encoders}

    # -- tokenize / encode -----------------------------------------------------------------------------------------
    def tokenize(self, text: str, warnings: Optional[List[str]] = None) -> Dict[str, List[TokenWindow]]:
        """Windows per encoder role (pads and embedding vectors differ between encoders)."""
        out: Dict[str, List[TokenWindow]] = {}
        dual = len(self.encoders) > 1 or self.family.startswith("sdxl")
        for i, enc in enumerate(self.encoders):
            lookup = self.embeddings.lookup(enc.role, enc.width, dual) if self.embeddings is not None else None
            out[enc.role] = tokenize_weighted(text, self.tokenizer, lookup, pad_token=enc.pad_id, window=enc.window,
                                              warnings=warnings if i == 0 else [])
        counts = {role: len(ws) for role, ws in out.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(f"the encoders' windows differ in number ({counts}); an embedding's clip_l and clip_g "
                             f"parts must hold the same number of vectors")
        return out

    def _windows(self, prompt: PromptInput, warnings: Optional[List[str]]) -> Dict[str, List[TokenWindow]]:
        if isinstance(prompt, str):
            return self.tokenize(prompt, warnings)
        if isinstance(prompt, dict):
            missing = [r for r in self.roles if r not in prompt]
            if missing:
                raise ValueError(f"windows for {', '.join(missing)} missing")
            return {r: list(prompt[r]) for r in self.roles}
        if len(self.encoders) != 1:
            raise ValueError("a stack with several encoders takes a prompt string or windows per role")
        return {self.roles[0]: list(prompt)}

    @torch.no_grad()
    def encode(self, prompt: PromptInput, clip_skip: Optional[int] = None,
               warnings: Optional[List[str]] = None,
               roles: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Prompt (text, or windows from `tokenize`) -> (cond [1, T*windows, cond_dim], pooled [1, proj]), float32.
        `clip_skip`: layer from the end (-1 last, -2 penultimate); None = the family's default. `roles` encodes
        only those encoders (cond as wide as they are; pooled from the stack's pooled encoder if among them, else
        from the first of them), as ComfyUI's per-encoder models (`clip.cond_stage_model.clip_l`) do."""
        chosen = [e for e in self.encoders if roles is None or e.role in roles]
        if not chosen:
            raise ValueError(f"no encoder of this {self.family} stack is named {list(roles or [])}; it has "
                             f"{', '.join(self.roles)}")
        if roles is not None:
            prompt = {r: w for r, w in prompt.items() if r in roles} if isinstance(prompt, dict) else prompt
        by_role = self._windows(prompt, warnings) if roles is None or not isinstance(prompt, dict) else prompt
        weighted = any(w.is_weighted for ws in by_role.values() for w in ws)
        pooled_by = self.pooled_encoder if self.pooled_encoder in chosen else chosen[0]
        parts: List[torch.Tensor] = []
        pooled: Optional[torch.Tensor] = None
        for enc in chosen:
            need_pooled = enc is pooled_by
            empty = empty_window(self.tokenizer.start_id, self.tokenizer.end_id, enc.pad_id, enc.window) \
                if weighted else None
            hidden, first_pooled = encode_weighted(enc, by_role[enc.role], clip_skip, need_pooled, empty)
            parts.append(hidden)
            if need_pooled:
                pooled = first_pooled
        return torch.cat(parts, dim=-1), pooled


def encode_weighted(encoder: nn.Module, windows: Sequence[TokenWindow], clip_skip: Optional[int], need_pooled: bool,
                    empty: Optional[TokenWindow] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One encoder's windows -> (hidden [1, T*windows, width], pooled of the first window or None), float32. With
    `empty` (the empty prompt at the windows' length) the prompt's weights act ComfyUI's way against it."""
    batch = list(windows) + ([empty] if empty is not None else [])
    hidden, pooled_all = encoder(batch, clip_skip, need_pooled)
    hidden = hidden.float()
    if empty is not None:
        z_empty, hidden = hidden[-1:], hidden[:-1]
        w = torch.tensor([win.weights for win in windows], dtype=hidden.dtype, device=hidden.device)
        hidden = (hidden - z_empty) * w.unsqueeze(-1) + z_empty
    pooled = pooled_all[0:1].float() if need_pooled and pooled_all is not None else None
    return hidden.reshape(1, -1, hidden.shape[-1]), pooled
