"""Prompt emphasis and the 77-token windows a CLIP text encoder reads.

Syntax (A1111/ComfyUI): `(text:1.3)` sets a weight, `(text)` multiplies by 1.1, `[text]` divides by 1.1, nesting
multiplies, `\\(` `\\)` `\\[` `\\]` `\\\\` are literal characters. Brackets that do not pair up are kept as literal
text, so no prompt is ever an error. `embedding:name` (a whole word, possibly inside a weighted group) inserts the
vectors of a textual-inversion embedding in place of the word.

Windows: start token, up to 75 content tokens, end token, then padding to 77 (SD1 pads with the end token,
OpenCLIP-based encoders with 0). A longer prompt is cut into several windows that are encoded separately. Words are
kept whole; when a word does not fit, the cut moves back to just after a comma if one lies within the last
`comma_backtrack` tokens (A1111's rule; `comma_backtrack=0` gives ComfyUI's plain word-boundary cut). Words longer than
`max_word_tokens` tokens are split instead of being moved whole.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

log = logging.getLogger(__name__)

ROUND_FACTOR = 1.1
SQUARE_FACTOR = 1 / 1.1
EMBEDDING_PREFIX = "embedding:"
_ESCAPABLE = "()[]\\"
_WEIGHT_SUFFIX = re.compile(r"^(.*):\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*$", re.DOTALL)

Token = Union[int, torch.Tensor]  # a vocabulary id, or one embedding vector [dim]
EmbeddingLookup = Callable[[str], Optional[torch.Tensor]]  # name -> [n, dim] vectors, or None when not found


# -- parsing ----------------------------------------------------------------------------------------------------------
@dataclass(eq=False)  # identity matters: equal-looking groups are distinct nodes
class _Group:
    opener: str  # "(" / "[" / "" for the root
    children: list = field(default_factory=list)  # str | _Group

    def add_text(self, text: str) -> None:
        if self.children and isinstance(self.children[-1], str):
            self.children[-1] += text
        else:
            self.children.append(text)


def _close(group: _Group) -> float:
    """The weight factor a closed group applies; strips a `:number` suffix from its last text."""
    if group.opener == "[":
        return SQUARE_FACTOR
    if group.children and isinstance(group.children[-1], str):
        m = _WEIGHT_SUFFIX.match(group.children[-1])
        if m:
            group.children[-1] = m.group(1)
            return float(m.group(2))
    return ROUND_FACTOR


def parse_prompt_weights(text: str) -> List[Tuple[str, float]]:
    """`text` -> [(literal text, weight)], adjacent equal weights merged, empty pieces dropped."""
    root = _Group("")
    stack: List[_Group] = [root]
    weights_of = {}  # id(closed group) -> its factor
    i = 0
    while i < len(text):
        ch = text[i]
        top = stack[-1]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            top.add_text(text[i + 1])
            i += 2
            continue
        if ch in "([":
            group = _Group(ch)
            top.children.append(group)
            stack.append(group)
        elif (ch == ")" and top.opener == "(") or (ch == "]" and top.opener == "["):
            stack.pop()
            weights_of[id(top)] = _close(top)
        else:
            top.add_text(ch)
        i += 1
    # Unclosed groups: their opener becomes literal text and their content belongs to the parent.
    while len(stack) > 1:
        group = stack.pop()
        parent = stack[-1]
        parent.children.remove(group)
        parent.add_text(group.opener)
        for child in group.children:
            if isinstance(child, str):
                parent.add_text(child)
            else:
                parent.children.append(child)

    segments: List[Tuple[str, float]] = []

    def walk(group: _Group, weight: float) -> None:
        for child in group.children:
            if isinstance(child, str):
                if not child:
                    continue
                if segments and segments[-1][1] == weight:
                    segments[-1] = (segments[-1][0] + child, weight)
                else:
                    segments.append((child, weight))
            else:
                walk(child, weight * weights_of[id(child)])

    walk(root, 1.0)
    return segments


# -- windows ----------------------------------------------------------------------------------------------------------
@dataclass
class TokenWindow:
    """One encoder pass: `tokens` (ids or embedding vectors) and a weight per token, both of window length."""
    tokens: List[Token]
    weights: List[float]
    end_index: int  # position of the end token (where the pooled output is read)

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, placeholder: int = 0) -> List[int]:
        """Token ids, with `placeholder` where an embedding vector sits."""
        return [t if isinstance(t, int) else placeholder for t in self.tokens]

    def embedding_slots(self) -> List[Tuple[int, torch.Tensor]]:
        return [(i, t) for i, t in enumerate(self.tokens) if isinstance(t, torch.Tensor)]

    @property
    def is_weighted(self) -> bool:
        return any(w != 1.0 for w in self.weights)


def empty_window(start_id: int, end_id: int, pad_id: int, length: int = 77) -> TokenWindow:
    """The empty prompt: start, end, padding -- the reference point that weights scale against."""
    return TokenWindow([start_id, end_id] + [pad_id] * (length - 2), [1.0] * length, 1)


def _split_embedding_word(word: str, lookup: EmbeddingLookup) -> Tuple[Optional[torch.Tensor], str, str]:
    """(vectors or None, the name tried, trailing text to tokenize normally)."""
    name = word[len(EMBEDDING_PREFIX):]
    vectors = lookup(name)
    if vectors is not None:
        return vectors, name, ""
    stripped = name.rstrip(",.;:!?")
    if stripped and stripped != name:
        vectors = lookup(stripped)
        return vectors, stripped, name[len(stripped):]
    return None, name, ""


def _words(segments: Sequence[Tuple[str, float]], tokenizer, lookup: Optional[EmbeddingLookup],
           warnings: List[str]) -> List[List[Tuple[Token, float]]]:
    """Segments -> words, each a list of (token, weight); embedding words become their vector rows."""
    words: List[List[Tuple[Token, float]]] = []
    for text, weight in segments:
        for word in text.split():
            trailing = word
            if lookup is not None and word.startswith(EMBEDDING_PREFIX) and len(word) > len(EMBEDDING_PREFIX):
                vectors, name, trailing = _split_embedding_word(word, lookup)
                if vectors is None:
                    message = f"embedding {name!r} not found; the word {word!r} was left out of the prompt"
                    warnings.append(message)
                    log.warning(message)
                else:
                    if vectors.dim() == 1:
                        vectors = vectors.unsqueeze(0)
                    words.append([(row, weight) for row in vectors])
                if not trailing:
                    continue
            ids = tokenizer.encode(trailing)
            if ids:
                words.append([(t, weight) for t in ids])
    return words


def tokenize_weighted(text: str, tokenizer, embeddings_lookup: Optional[EmbeddingLookup] = None, *,
                      pad_token: Optional[int] = None, window: int = 77, comma_backtrack: int = 20,
                      max_word_tokens: int = 8, warnings: Optional[List[str]] = None) -> List[TokenWindow]:
    """Weighted prompt -> windows of `window` tokens (at least one).

    `embeddings_lookup(name)` returns the [n, dim] vectors of a textual-inversion embedding or None; a missing one is
    reported in `warnings` (and the log) and left out. Without a lookup, `embedding:x` is ordinary text.
    `pad_token` defaults to the end token (SD1 CLIP-L); OpenCLIP encoders pad with 0.
    """
    warnings = warnings if warnings is not None else []
    start, end = tokenizer.start_id, tokenizer.end_id
    pad = end if pad_token is None else pad_token
    capacity = window - 2
    comma = getattr(tokenizer, "comma_id", None)
    words = _words(parse_prompt_weights(text), tokenizer, embeddings_lookup, warnings)

    chunks: List[List[Tuple[Token, float]]] = []
    current: List[Tuple[Token, float]] = []
    after_comma = -1  # index in `current` just after its last comma token

    def flush() -> None:
        nonlocal current, after_comma
        carry: List[Tuple[Token, float]] = []
        if comma_backtrack > 0 and 0 < after_comma < len(current) and len(current) - after_comma <= comma_backtrack:
            carry = current[after_comma:]
            current = current[:after_comma]
        chunks.append(current)
        current, after_comma = carry, -1

    for word in words:
        remaining = word
        while remaining:
            room = capacity - len(current)
            if len(remaining) <= room:
                piece, remaining = remaining, []
            elif len(remaining) > max_word_tokens or not current:
                if room == 0:
                    flush()
                    continue
                piece, remaining = remaining[:room], remaining[room:]
            else:
                flush()
                continue
            current.extend(piece)
            for k in range(len(current) - 1, len(current) - len(piece) - 1, -1):
                tok = current[k][0]
                if isinstance(tok, int) and tok == comma:
                    after_comma = k + 1
                    break
    if current or not chunks:
        chunks.append(current)

    windows = []
    for chunk in chunks:
        tokens: List[Token] = [start] + [t for t, _ in chunk] + [end]
        weights = [1.0] + [w for _, w in chunk] + [1.0]
        end_index = len(tokens) - 1
        tokens += [pad] * (window - len(tokens))
        weights += [1.0] * (window - len(weights))
        windows.append(TokenWindow(tokens, weights, end_index))
    return windows
