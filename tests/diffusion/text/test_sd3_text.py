"""SD3's text stack against transformers' CLIP and T5 models run by hand on the same weights: how the three
encoders' outputs are joined, what a missing encoder leaves, emphasis, CLIP skip."""
import pytest
import torch

from diffusion.synthetic_sd3 import sd3_clip_state, t5_state
from diffusion.text.sd3_text import SD3TextStack

PROMPT = "a photo of a cat, (highly detailed:1.3)"


@pytest.fixture(scope="module")
def weights():
    return {"clip_l": sd3_clip_state("clip_l", False, 2), "clip_g": sd3_clip_state("clip_g", False, 3),
            "t5xxl": t5_state(False, 4)}


@pytest.fixture(scope="module")
def references(weights):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
    models = {}
    for role, (hidden, layers, inter, proj) in (("clip_l", (64, 2, 128, 64)), ("clip_g", (128, 2, 256, 128))):
        config = CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=inter,
                                num_hidden_layers=layers, num_attention_heads=hidden // 64, projection_dim=proj,
                                max_position_embeddings=77, hidden_act="quick_gelu" if role == "clip_l" else "gelu")
        model = CLIPTextModelWithProjection(config).eval()
        model.load_state_dict(weights[role])
        models[role] = model
    t5 = T5EncoderModel(T5Config(vocab_size=32128, d_model=256, d_kv=64, d_ff=512, num_layers=2, num_heads=4,
                                 feed_forward_proj="gated-gelu", is_encoder_decoder=False)).eval()
    t5.load_state_dict(weights["t5xxl"], strict=False)
    models["t5xxl"] = t5
    return models


def _clip_parts(model, ids, skip=-2):
    out = model(input_ids=ids, output_hidden_states=True)
    pooled_unprojected = model.text_model.final_layer_norm(out.last_hidden_state)[0, int(ids[0].tolist().index(49407))]
    return out.hidden_states[skip], pooled_unprojected[None], out.text_embeds


def _unweighted(stack, text):
    """The windows of `text` with every weight 1 (the reference models know nothing of emphasis)."""
    windows = stack.tokenize(text)
    for role_windows in windows.values():
        for w in role_windows:
            w.weights = [1.0] * len(w.weights)
    return windows


def test_three_encoders_join_as_sd3_reads_them(weights, references):
    stack = SD3TextStack.from_role_weights(weights)
    windows = _unweighted(stack, "a photo of a cat")
    cond, pooled = stack.encode(windows)
    ids = {role: torch.tensor([w[0].ids()]) for role, w in windows.items()}
    with torch.no_grad():
        l_hidden, l_pooled, _ = _clip_parts(references["clip_l"], ids["clip_l"])
        g_hidden, _, g_projected = _clip_parts(references["clip_g"], ids["clip_g"])
        t5_hidden = references["t5xxl"](input_ids=ids["t5xxl"]).last_hidden_state
    clip_part = torch.nn.functional.pad(torch.cat([l_hidden, g_hidden], dim=-1), (0, 256 - 192))
    expected = torch.cat([clip_part, t5_hidden], dim=1)
    assert cond.shape == (1, 154, 256) and pooled.shape == (1, 64 + 128)
    torch.testing.assert_close(cond, expected, rtol=1e-5, atol=1e-5)
    # CLIP-L's pooled output unprojected, bigG's projected
    torch.testing.assert_close(pooled, torch.cat([l_pooled, g_projected], dim=-1), rtol=1e-5, atol=1e-5)


def test_missing_encoders_leave_what_sd3_expects(weights):
    full = SD3TextStack.from_role_weights(weights)
    cond_full, pooled_full = full.encode("a cat")
    t5_only = SD3TextStack.from_role_weights({"t5xxl": weights["t5xxl"]})
    cond, pooled = t5_only.encode("a cat")
    torch.testing.assert_close(cond, cond_full[:, 77:])  # T5's tokens alone
    assert pooled.shape == (1, 2048) and not pooled.any()
    clips = SD3TextStack.from_role_weights({"clip_l": weights["clip_l"], "clip_g": weights["clip_g"]})
    cond, pooled = clips.encode("a cat")
    assert cond.shape == (1, 77, 4096) and not cond[..., 192:].any()  # padded to T5's width
    torch.testing.assert_close(cond[..., :192], cond_full[:, :77, :192])
    torch.testing.assert_close(pooled, pooled_full)
    g_only = SD3TextStack.from_role_weights({"clip_g": weights["clip_g"]})
    cond, pooled = g_only.encode("a cat")
    assert not cond[..., :768].any() and not pooled[:, :768].any()  # CLIP-L's columns stay zero
    torch.testing.assert_close(cond[..., 768:768 + 128], cond_full[:, :77, 64:192])


def test_empty_window_lists_leave_an_encoder_out(weights):
    stack = SD3TextStack.from_role_weights(weights)
    windows = stack.tokenize("a cat")
    cond, _ = stack.encode({**windows, "t5xxl": []})
    assert cond.shape[1] == 77
    cond, pooled = stack.encode({"clip_l": [], "clip_g": [], "t5xxl": []})
    assert cond.shape == (1, 77, 256) and not cond.any() and not pooled.any()


def test_emphasis_scales_against_the_empty_prompt_in_every_encoder(weights):
    stack = SD3TextStack.from_role_weights(weights)
    plain, _ = stack.encode(_unweighted(stack, PROMPT))
    weighted, _ = stack.encode(PROMPT)
    t5 = stack.encoder("t5xxl")
    windows = stack.tokenize(PROMPT)
    t5_window = windows["t5xxl"][0]
    empty, _ = t5([t5.empty_window(len(t5_window))])
    w = torch.tensor(t5_window.weights)[None, :, None]
    expected_t5 = (plain[:, 77:] - empty) * w + empty
    torch.testing.assert_close(weighted[:, 77:], expected_t5, rtol=1e-5, atol=1e-5)
    assert (weighted[:, :77] - plain[:, :77]).abs().max() > 1e-4  # the CLIP part is weighted too


def test_clip_skip_reaches_every_encoder(weights, references):
    stack = SD3TextStack.from_role_weights(weights)
    windows = _unweighted(stack, "a cat")
    cond, _ = stack.encode(windows, clip_skip=-1)
    ids = torch.tensor([windows["clip_l"][0].ids()])
    with torch.no_grad():
        last_l, _, _ = _clip_parts(references["clip_l"], ids, skip=-1)
    torch.testing.assert_close(cond[:, :77, :64], last_l, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no clip_g encoder"):
        SD3TextStack.from_role_weights({"t5xxl": weights["t5xxl"]}).encode("x", roles=["clip_g"])
