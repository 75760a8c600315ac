"""T5's SentencePiece unigram tokenizer, built from Google's vocabulary shipped in `data/` (never downloaded).

The pipeline is the one transformers' T5TokenizerFast runs (what ComfyUI tokenizes SD3's and Flux's T5-XXL prompts
with): SentencePiece's precompiled NFKC map, trailing whitespace stripped, runs of spaces turned into one "▁", then
words marked with a leading "▁" (the first one too) and split into the pieces of highest total log-probability
(Viterbi over the unigram scores; the `tokenizers` library does the search). Ids: 0 `<pad>`, 1 `</s>`, 2 `<unk>`,
then the 32,000 pieces' ranks, and 32000-32099 the sentinels `<extra_id_99>` ... `<extra_id_0>`.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
from functools import lru_cache
from typing import List

DATA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "t5_spiece_vocab.json.gz")

PAD_ID, END_ID, UNK_ID = 0, 1, 2
SENTINELS = 100


class T5Tokenizer:
    """Text -> T5 piece ids. `encode` gives the content ids only (no `</s>`), like the CLIP tokenizer's."""

    pad_id = PAD_ID
    end_id = END_ID
    start_id = None  # T5 prompts have no start token

    def __init__(self, path: str = DATA_PATH):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
        from tokenizers.models import Unigram
        with gzip.open(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        vocab = [(piece, float(score)) for piece, score in data["vocab"]]
        tokenizer = Tokenizer(Unigram(vocab, unk_id=int(data["unk_id"]), byte_fallback=False))
        tokenizer.normalizer = normalizers.Sequence([
            normalizers.Precompiled(base64.b64decode(data["precompiled_charsmap"])),
            normalizers.Strip(left=False, right=True),
            normalizers.Replace(Regex(" {2,}"), "\u2581"),
        ])
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        specials = [piece for piece, _ in vocab[:3]]
        specials += [f"<extra_id_{i}>" for i in range(SENTINELS - 1, -1, -1)]  # 32000 is <extra_id_99>
        tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
        self._tokenizer = tokenizer
        self.vocab_size = len(vocab) + SENTINELS

    def encode(self, text: str) -> List[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def __call__(self, text: str) -> List[int]:
        """The ids of `text` followed by `</s>`, as the encoder reads a whole prompt."""
        return self.encode(text) + [END_ID]

    def decode(self, ids: List[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)


@lru_cache(maxsize=1)
def default_t5_tokenizer() -> T5Tokenizer:
    return T5Tokenizer()
