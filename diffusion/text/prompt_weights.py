"""Prompt emphasis and the 77-token windows a CLIP text encoder reads, as the reference engine forms them.

Emphasis: `(text)` multiplies the weight by 1.1, `(text:1.3)` sets it to 1.3 (an explicit number replaces what the
enclosing groups built up, it does not multiply with it), groups nest, `\\(` and `\\)` are literal parentheses.
Square brackets have no meaning (they are text), and a parenthesis that does not pair up stays literal text, so no
prompt is ever an error.

Windows: start token, up to 75 content tokens, end token, then padding to 77 (SD1 pads with the end token,
OpenCLIP-based encoders with 0). The unit that is kept together is a *piece*: the text of one emphasis segment up to
the next `embedding:` reference (a space or newline before it), tokenized as a whole, or one embedding's vectors.
A piece that does not fit in the current window moves whole to the next one, unless it is `max_word_tokens` (8)
tokens or longer: then it is cut where the window is full and continues in the next. `embedding:name` inserts the
vectors of a textual-inversion embedding; a name that is not found is reported and left out.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch

log = logging.getLogger(__name__)

EMPHASIS_FACTOR = 1.1
EMBEDDING_PREFIX = "embedding:"
_LITERAL_OPEN, _LITERAL_CLOSE = "\x00\x02", "\x00\x01"  # stand-ins for escaped parentheses while parsing
_EMBEDDING_BOUNDARY = re.compile(r"[ \n](?=" + re.escape(EMBEDDING_PREFIX) + ")")

Token = Union[int, torch.Tensor]  # a vocabulary id, or one embedding vector [dim]
EmbeddingLookup = Callable[[str], Optional[torch.Tensor]]  # name -> [n, dim] vectors, or None when not found


# -- parsing ----------------------------------------------------------------------------------------------------------
def _top_level_pieces(text: str) -> Iterator[str]:
    """Split `text` into plain runs and parenthesised groups "(...)" at nesting depth 0. A ")" with no "(" before
    it sends the depth below 0, so what follows stays plain text until the depth is back at 0 (the reference's
    scanner); an unclosed group runs to the end as plain text."""
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0 and index > start:
                yield text[start:index]
            if depth == 0:
                start = index
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                yield text[start:index + 1]
                start = index + 1
    if start < len(text):
        yield text[start:]


def _group_weight(inner: str, weight: float) -> Tuple[str, float]:
    """The text and weight inside "(inner)" under an enclosing `weight`: `text:number` sets the weight to the
    number, anything else multiplies it by 1.1."""
    colon = inner.rfind(":")
    if colon > 0:
        try:
            return inner[:colon], float(inner[colon + 1:])
        except ValueError:
            pass
    return inner, weight * EMPHASIS_FACTOR


def _weighted(text: str, weight: float) -> Iterator[Tuple[str, float]]:
    for piece in _top_level_pieces(text):
        if len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")":
            yield from _weighted(*_group_weight(piece[1:-1], weight))
        else:
            yield piece, weight


def parse_prompt_weights(text: str) -> List[Tuple[str, float]]:
    """`text` -> [(literal text, weight)] in order, one entry per emphasis segment (never merged: each is
    tokenized on its own)."""
    hidden = text.replace("\\)", _LITERAL_CLOSE).replace("\\(", _LITERAL_OPEN)
    return [(segment.replace(_LITERAL_CLOSE, ")").replace(_LITERAL_OPEN, "("), weight)
            for segment, weight in _weighted(hidden, 1.0)]


# -- windows ----------------------------------------------------------------------------------------------------------
@dataclass
class TokenWindow:
    """One encoder pass: `tokens` (ids or embedding vectors) and a weight per token, both of window length."""
    tokens: List[Token]
    weights: List[float]
    end_index: int  # position of the end token (where the pooled output is read)
    # per token, the 1-based index of the weighted segment of the prompt it came from (0: start, end, padding)
    word_ids: List[int] = field(default_factory=list)

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


def embed_windows(table: torch.nn.Embedding, windows: Sequence[TokenWindow], role: str) -> torch.Tensor:
    """Token embeddings [n, T, width] of windows through an encoder's embedding `table`, with textual-inversion
    vectors put in their slots."""
    width = table.weight.shape[1]
    ids = torch.tensor([w.ids() for w in windows], dtype=torch.long, device=table.weight.device)
    x = table(ids)
    for b, w in enumerate(windows):
        for pos, vector in w.embedding_slots():
            if vector.shape[-1] != width:
                raise ValueError(f"embedding vector of width {vector.shape[-1]} given to the {role} text encoder "
                                 f"({width} wide)")
            x[b, pos] = vector.to(device=x.device, dtype=x.dtype)
    return x


def empty_window(start_id: int, end_id: int, pad_id: int, length: int = 77) -> TokenWindow:
    """The empty prompt: start, end, padding -- the reference point that weights scale against."""
    return TokenWindow([start_id, end_id] + [pad_id] * (length - 2), [1.0] * length, 1)


def _embedding_piece(piece: str, lookup: Optional[EmbeddingLookup]) -> Tuple[Optional[torch.Tensor], str, str]:
    """For a piece starting with `embedding:`: (vectors or None, the name tried, the text after the name). The name
    is the first whitespace-separated word; a name with commas around it is tried without them, the commas then
    joining the text after it."""
    words = piece[len(EMBEDDING_PREFIX):].strip("\n").split()
    name, rest = (words[0], " ".join(words[1:])) if words else ("", "")
    vectors = lookup(name) if lookup is not None and name else None
    if vectors is None:
        bare = name.strip(",")
        if bare and len(bare) < len(name):
            return (lookup(bare) if lookup is not None else None), bare, f"{name[len(bare):]} {rest}"
    return vectors, name, rest


def _pieces(segments: Sequence[Tuple[str, float]], tokenizer, lookup: Optional[EmbeddingLookup],
            warnings: List[str]) -> List[List[Tuple[Token, float, int]]]:
    """Segments -> pieces (see the module docstring), each a list of (token, weight, segment number)."""
    pieces: List[List[Tuple[Token, float, int]]] = []
    for number, (text, weight) in enumerate(segments, start=1):
        for part in _EMBEDDING_BOUNDARY.split(text):
            if not part:
                continue
            if lookup is not None and part.startswith(EMBEDDING_PREFIX):
                vectors, name, part = _embedding_piece(part, lookup)
                if vectors is None:
                    message = f"embedding {name!r} not found; it was left out of the prompt"
                    warnings.append(message)
                    log.warning(message)
                else:
                    rows = vectors.unsqueeze(0) if vectors.dim() == 1 else vectors
                    pieces.append([(row, weight, number) for row in rows])
                if not part:
                    continue
            pieces.append([(token, weight, number) for token in tokenizer.encode(part)])
    return pieces


def tokenize_weighted(text: str, tokenizer, embeddings_lookup: Optional[EmbeddingLookup] = None, *,
                      pad_token: Optional[int] = None, window: int = 77, max_word_tokens: int = 8,
                      warnings: Optional[List[str]] = None) -> List[TokenWindow]:
    """Weighted prompt -> windows of `window` tokens (at least one).

    `embeddings_lookup(name)` returns the [n, dim] vectors of a textual-inversion embedding or None; a missing one is
    reported in `warnings` (and the log) and left out. Without a lookup, `embedding:x` is ordinary text.
    `pad_token` defaults to the end token (SD1 CLIP-L); OpenCLIP encoders pad with 0.
    """
    warnings = warnings if warnings is not None else []
    start, end = tokenizer.start_id, tokenizer.end_id
    pad = end if pad_token is None else pad_token
    capacity = window - 2
    chunks: List[List[Tuple[Token, float, int]]] = [[]]
    for piece in _pieces(parse_prompt_weights(text), tokenizer, embeddings_lookup, warnings):
        cuttable = len(piece) >= max_word_tokens
        while piece:
            room = capacity - len(chunks[-1])
            if len(piece) <= room:
                chunks[-1].extend(piece)
                break
            if cuttable:
                chunks[-1].extend(piece[:room])
                piece = piece[room:]
            chunks.append([])

    windows = []
    for chunk in chunks:
        tokens: List[Token] = [start] + [t for t, _, _ in chunk] + [end]
        weights = [1.0] + [w for _, w, _ in chunk] + [1.0]
        word_ids = [0] + [n for _, _, n in chunk] + [0]
        end_index = len(tokens) - 1
        tokens += [pad] * (window - len(tokens))
        weights += [1.0] * (window - len(weights))
        word_ids += [0] * (window - len(word_ids))
        windows.append(TokenWindow(tokens, weights, end_index, word_ids))
    return windows


def tokenize_unwindowed(text: str, tokenizer, embeddings_lookup: Optional[EmbeddingLookup] = None, *,
                        min_length: int = 77, warnings: Optional[List[str]] = None) -> TokenWindow:
    """Weighted prompt -> one window holding all of it, as T5 reads a prompt: no start token, the end token after
    the content, then padding up to `min_length` (tokenizer.pad_id). Emphasis and embeddings as for CLIP."""
    warnings = warnings if warnings is not None else []
    chunk = [item for piece in _pieces(parse_prompt_weights(text), tokenizer, embeddings_lookup, warnings)
             for item in piece]
    tokens: List[Token] = [t for t, _, _ in chunk] + [tokenizer.end_id]
    weights = [w for _, w, _ in chunk] + [1.0]
    word_ids = [n for _, _, n in chunk] + [0]
    end_index = len(tokens) - 1
    pad = max(0, min_length - len(tokens))
    return TokenWindow(tokens + [tokenizer.pad_id] * pad, weights + [1.0] * pad, end_index, word_ids + [0] * pad)
