"""CLIP's byte-level BPE tokenizer, built from OpenAI's own vocabulary file shipped in `data/` (never downloaded).

The algorithm is the published one: text is cleaned (Unicode NFC, runs of whitespace collapsed to one space,
lowercased), split into pieces by CLIP's pre-tokenizer pattern (letter runs, single digits, punctuation runs,
English contractions), each piece's UTF-8 bytes are mapped to printable characters, and merges are applied by rank
with `</w>` marking the last symbol of a word. The vocabulary is the 256 byte characters, the same with `</w>`, one
entry per merge, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407).

Cleaning follows transformers' CLIPTokenizer (what a ComfyUI install without ftfy effectively runs for Latin text);
OpenAI's original additionally runs ftfy and HTML unescaping, which we leave out so the ids match the reference.
"""
from __future__ import annotations

import gzip
import os
import unicodedata
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Tuple

import regex

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DEFAULT_BPE_PATH = os.path.join(DATA_DIR, "bpe_simple_vocab_16e6.txt.gz")

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI's CLIP uses the first 49152 - 256 - 2 merges of the file: 256 byte symbols + 256 word-final byte symbols +
# merges + 2 special tokens = 49408 ids.
_N_MERGES = 49152 - 256 - 2

_PIECE_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
_WHITESPACE = regex.compile(r"\s+")


def bytes_to_unicode() -> Dict[int, str]:
    """Byte value -> a printable character standing for it. Printable Latin-1 bytes stand for themselves; the others
    (control characters, space, a few Latin-1 gaps) are moved to code points 256 and up, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in keep}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    # Order matters: the vocabulary lists the printable bytes first, then the shifted ones.
    return {b: mapping[b] for b in keep + [b for b in range(256) if b not in keep]}


def clean_text(text: str) -> str:
    """NFC, whitespace runs -> one space, lowercase (the reference tokenizer's normaliser)."""
    text = unicodedata.normalize("NFC", text)
    text = _WHITESPACE.sub(" ", text)
    return text.lower()


def _read_merges(path: str) -> List[Tuple[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # line 0 is the "#version" header
    return [tuple(line.split()) for line in lines[1:_N_MERGES + 1]]


class ClipTokenizer:
    """Text <-> CLIP token ids. `encode` gives the content ids only; `__call__` adds start/end tokens."""

    def __init__(self, bpe_path: str = DEFAULT_BPE_PATH):
        merges = _read_merges(bpe_path)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        symbols += [s + END_OF_WORD for s in symbols]
        symbols += ["".join(pair) for pair in merges]
        symbols += [START_TOKEN, END_TOKEN]
        self.merges = merges
        self.vocab: Dict[str, int] = {s: i for i, s in enumerate(symbols)}
        self.id_to_token: Dict[int, str] = {i: s for s, i in self.vocab.items()}
        self.ranks: Dict[Tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.start_id = self.vocab[START_TOKEN]
        self.end_id = self.vocab[END_TOKEN]
        self.comma_id = self.vocab["," + END_OF_WORD]
        self._cache: Dict[str, Tuple[int, ...]] = {START_TOKEN: (self.start_id,), END_TOKEN: (self.end_id,)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- BPE ----------------------------------------------------------------------------------------------------
    def _bpe(self, piece: str) -> Tuple[int, ...]:
        """Ids of one pre-tokenized piece (already byte-mapped)."""
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        word = list(piece[:-1]) + [piece[-1] + END_OF_WORD]
        ranks = self.ranks
        while len(word) > 1:
            best_rank, best = None, None
            for i in range(len(word) - 1):
                r = ranks.get((word[i], word[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best = r, (word[i], word[i + 1])
            if best is None:
                break
            first, second = best
            merged: List[str] = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids = tuple(self.vocab[s] for s in word)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def pieces(self, text: str) -> List[str]:
        """The pre-tokenizer's pieces of cleaned `text` (before byte mapping)."""
        return _PIECE_PATTERN.findall(clean_text(text))

    def encode(self, text: str) -> List[int]:
        """Content token ids of `text`, without start/end tokens and without truncation."""
        out: List[int] = []
        enc = self.byte_encoder
        for piece in self.pieces(text):
            if piece in (START_TOKEN, END_TOKEN):
                out.extend(self._cache[piece])
                continue
            out.extend(self._bpe("".join(enc[b] for b in piece.encode("utf-8"))))
        return out

    def __call__(self, text: str) -> List[int]:
        return [self.start_id] + self.encode(text) + [self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (special tokens dropped, word ends become spaces)."""
        symbols = "".join(self.id_to_token[int(i)] for i in ids if int(i) not in (self.start_id, self.end_id))
        words = [bytearray(self.byte_decoder[c] for c in w).decode("utf-8", errors="replace")
                 for w in symbols.split(END_OF_WORD)]
        return " ".join(words).strip()

    def token_text(self, token_id: int) -> Optional[str]:
        return self.id_to_token.get(int(token_id))

    def vocab_and_merges(self) -> Tuple[Dict[str, int], List[str]]:
        """`vocab.json`/`merges.txt` contents equivalent to this tokenizer (for transformers' CLIPTokenizer)."""
        return dict(self.vocab), [" ".join(pair) for pair in self.merges]


@lru_cache(maxsize=None)
def default_tokenizer() -> ClipTokenizer:
    """The shared tokenizer over the shipped vocabulary (parsed once per process)."""
    return ClipTokenizer()
