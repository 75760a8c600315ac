"""T5: the tokenizer against transformers' T5 tokenizer on the same vocabulary and published ids, the encoder
against transformers' T5EncoderModel on the same random weights, and the prompt window T5 reads."""
import base64
import gzip
import json

import pytest
import torch

from diffusion.synthetic_sd3 import t5_state
from diffusion.text.prompt_weights import tokenize_unwindowed
from diffusion.text.t5_encoder import T5TextEncoder
from diffusion.text.t5_tokenizer import DATA_PATH, T5Tokenizer

PROMPTS = ["a photo of a cat", "A majestic lion, golden hour, 35mm film, highly detailed.",
           "cyberpunk city at night; neon signs reading \"OPEN 24/7\" (rain)", "Ünïcödé café — naïve façade",
           "the year 2024, 3.5 stars, 100% organic", "masterpiece:1.2, best quality"]


@pytest.fixture(scope="module")
def tokenizer():
    return T5Tokenizer()


@pytest.fixture(scope="module")
def reference():
    """transformers' own T5 tokenizer pipeline, given the same vocabulary and normalisation map."""
    from transformers import T5TokenizerFast
    with gzip.open(DATA_PATH, "rt", encoding="utf-8") as f:
        data = json.load(f)
    vocab = [(p, float(s)) for p, s in data["vocab"]] + [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    return T5TokenizerFast(vocab=vocab, _spm_precompiled_charsmap=base64.b64decode(data["precompiled_charsmap"]))


def test_published_ids(tokenizer):
    # ranks in Google's vocabulary: <pad> 0, </s> 1, <unk> 2, "▁" 3, "▁the" 8, "a" 9, "▁and" 11, "▁to" 12, "▁of" 13
    assert tokenizer("the and to of") == [8, 11, 12, 13, 1]
    assert tokenizer.encode("a") == [3, 9]
    assert tokenizer.vocab_size == 32100
    assert tokenizer.encode("<extra_id_0>") == [32099] and tokenizer.encode("</s>") == [1]


@pytest.mark.parametrize("text", PROMPTS)
def test_ids_match_transformers(tokenizer, reference, text):
    assert tokenizer(text) == reference(text)["input_ids"]


def test_spacing_follows_the_current_t5_pipeline(tokenizer):
    # trailing spaces are stripped, runs of spaces count once
    assert tokenizer("a  cat ") == tokenizer("a cat")
    assert tokenizer.decode(tokenizer("a photo of a cat")) == "a photo of a cat"


def test_window_has_no_start_token_and_pads_to_77(tokenizer):
    window = tokenize_unwindowed("a (cat:1.5)", tokenizer)
    ids = window.ids()
    assert len(ids) == 77 and ids[:4] == tokenizer.encode("a ") + tokenizer.encode("cat") + [1]
    assert set(ids[4:]) == {0} and window.end_index == 3
    assert window.weights[:4] == [1.0, 1.0, 1.5, 1.0]
    long = tokenize_unwindowed(" ".join(["word"] * 100), tokenizer)
    assert len(long) == 101 and long.ids()[-1] == 1  # one window, as long as the prompt


@pytest.fixture(scope="module")
def t5_weights():
    return t5_state(full=False, seed=3)


def _reference_model(state):
    from transformers import T5Config, T5EncoderModel
    config = T5Config(vocab_size=32128, d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
    model = T5EncoderModel(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) <= {"encoder.embed_tokens.weight"} and not unexpected
    return model


def test_encoder_matches_transformers(tokenizer, t5_weights):
    ours = T5TextEncoder.from_weights(t5_weights)
    ref = _reference_model(t5_weights)
    window = tokenize_unwindowed("a photo of a cat, highly detailed", tokenizer)
    ids = torch.tensor([window.ids()])
    with torch.no_grad():
        expected = ref(input_ids=ids, output_hidden_states=True)
        hidden, pooled = ours([window])
        penultimate, _ = ours([window], clip_skip=-2)
    assert pooled is None and hidden.shape == (1, 77, 256)
    torch.testing.assert_close(hidden, expected.last_hidden_state, rtol=1e-5, atol=1e-5)
    # CLIP skip -2 on T5 (CLIPSetLastLayer): the first block's output through the final norm
    torch.testing.assert_close(penultimate, ref.encoder.final_layer_norm(expected.hidden_states[1]),
                               rtol=1e-5, atol=1e-5)
    assert (hidden - penultimate).abs().max() > 1e-3


def test_encoder_config_comes_from_the_shapes(t5_weights):
    enc = T5TextEncoder.from_weights(dict(t5_weights), dtype=torch.bfloat16)
    config = enc.model.config
    assert (config.d_model, config.num_layers, config.num_heads, config.d_ff) == (256, 2, 4, 512)
    assert config.feed_forward_proj == "gated-gelu" and enc.model.shared.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="clip_skip -3 is out of range for the t5xxl"):
        enc.check_skip(-3)
    broken = {k: v for k, v in t5_weights.items() if "block.1.layer.1" not in k}
    with pytest.raises(ValueError, match="t5xxl text encoder weights are incomplete"):
        T5TextEncoder.from_weights(broken)
