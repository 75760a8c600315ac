"""The CLIP BPE tokenizer against published facts and against transformers' CLIPTokenizer on the same vocabulary."""
import json
import os
import random

import pytest

from diffusion.text.tokenizer import DATA_DIR, ClipTokenizer, bytes_to_unicode, default_tokenizer


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    from transformers import CLIPTokenizer
    vocab, merges = tok.vocab_and_merges()
    d = tmp_path_factory.mktemp("clip_tokenizer")
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(d), local_files_only=True)


def test_published_ids(tok):
    assert tok("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.start_id, tok.end_id, tok.vocab_size) == (49406, 49407, 49408)
    assert tok.comma_id == 267
    assert tok.encode("") == [] and tok("") == [49406, 49407]


def test_vocabulary_layout(tok):
    mapping = bytes_to_unicode()
    assert len(mapping) == 256 and len(set(mapping.values())) == 256
    assert mapping[ord("a")] == "a" and mapping[ord(" ")] == "Ġ"
    assert tok.vocab["!"] == 0 and tok.vocab["a</w>"] == 256 + mapping_index(mapping, ord("a"))
    assert len(tok.merges) == 49152 - 258


def mapping_index(mapping, byte):
    return list(mapping).index(byte)


def test_data_file_and_license_shipped():
    assert os.path.isfile(os.path.join(DATA_DIR, "bpe_simple_vocab_16e6.txt.gz"))
    license_text = open(os.path.join(DATA_DIR, "LICENSE"), encoding="utf-8").read()
    assert "OpenAI" in license_text and "MIT License" in license_text


def test_cleaning_and_decode(tok):
    assert tok.encode("A  PHOTO\n\tof a Cat") == tok.encode("a photo of a cat")
    assert tok.decode(tok("a photo of a cat")) == "a photo of a cat"
    assert tok.decode(tok("masterpiece, best quality")) == "masterpiece , best quality"
    assert tok.encode("<|endoftext|>") == [49407]


HAND_PICKED = [
    "a photo of a cat", "Hello, World!", "it's a dog's life, isn't it? you'll we've I'd they're I'm",
    "masterpiece, best quality, (ultra detailed:1.2), 8k uhd, dslr", "1girl, solo, looking_at_viewer",
    "naïve café résumé façade Ångström", "Straße ẞ İstanbul ǅ", "Привет мир", "你好世界 日本語のテキスト",
    "مرحبا بالعالم", "emoji 😀🎉👍🏽 👩‍👩‍👧‍👦 🇯🇵", "numbers 1234567890 3.14159 1e10 -42 50%",
    "punctuation !!! ??? ... --- ___ *** ### @@@ $$$ ^^^ ~~~ ``` ''' \"\"\"", "tabs\tand\nnewlines\r\nand   spaces",
    "zero\u200bwidth\u00a0nbsp", "e\u0301 combining vs é precomposed", "<|startoftext|>x<|endoftext|>",
    "ALLCAPS and MiXeD CaSe", "hyphen-ated words and snake_case and CamelCase", "url https://example.com/a?b=c&d=e",
    "&amp; &lt;html&gt; entities", "a" * 200, "😀" * 20, "   leading and trailing   ", "",
]
POOL = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`"
        "éèêëàâäôöûüçñßøåæœ" "ΑΒΓαβγδ" "АБВабвг" "中文字日本" "한국어" "😀🎨🌟🔥✨" "\t\n\u3000\u00a0")


def random_strings(n=400, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(1, 60)
        out.append("".join(rng.choice(POOL) for _ in range(length)))
    return out


def test_matches_transformers_tokenizer(tok, hf_tok):
    cases = HAND_PICKED + random_strings()
    assert len(cases) > 400
    mismatches = []
    for text in cases:
        ours = tok(text)
        ref = hf_tok(text)["input_ids"]
        if ours != ref:
            mismatches.append((text, ours, ref))
    assert not mismatches, mismatches[:3]


def test_separate_instance_from_file():
    other = ClipTokenizer()
    assert other("a photo of a cat") == default_tokenizer()("a photo of a cat")
