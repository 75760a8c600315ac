"""Text encoders built from SD1 / SD2 / SDXL-style weights, checked against transformers' own CLIP text models (and
a plain-torch OpenCLIP forward) run on the same weights."""
import pytest
import torch

from diffusion.text import ClipTextStack, convert_openclip, default_tokenizer, derive_text_config, heads_for_width
from diffusion.text.clip_encoders import detect_text_family
from diffusion.text.clip_keys import convert_hf

from .builders import (final_norm, hf_hidden, hf_layout_state, hf_model, openclip_reference, openclip_state,
                       openclip_to_hf_model, prefixed)

TOL = 1e-5
PROMPT = "a photo of a cat, highly detailed"


def close(a, b, tol=TOL):
    a, b = a.detach().float(), b.detach().float()
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= tol, err


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


def ids_for(tok, text, pad):
    ids = tok(text)
    return [ids + [pad] * (77 - len(ids))]


# -- SD1: CLIP-L, HF layout -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd1():
    model = hf_model(32, 3, 2, seed=1)
    state = prefixed(hf_layout_state(model), "cond_stage_model.transformer.")
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77.0)[None] + 0.001
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # other parts of the checkpoint
    stack = ClipTextStack.from_checkpoint(state, num_heads=2)
    return model, stack


def test_sd1_matches_transformers(sd1, tok):
    model, stack = sd1
    assert stack.family == "sd1" and stack.roles == ["clip_l"] and stack.cond_dim == 32
    cond, pooled = stack.encode(PROMPT)
    hs, last, ref_pooled = hf_hidden(model, ids_for(tok, PROMPT, 49407))
    close(cond, last)
    close(pooled, ref_pooled)


def test_sd1_uses_transformers_tokenizer_padding(sd1, tok, tmp_path):
    from transformers import CLIPTokenizer
    import json
    vocab, merges = tok.vocab_and_merges()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    hf_tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    ids = hf_tok(PROMPT, padding="max_length", max_length=77)["input_ids"]
    model, stack = sd1
    cond, _ = stack.encode(PROMPT)
    close(cond, hf_hidden(model, [ids])[1])


@pytest.mark.parametrize("skip", [-1, -2, -3])
def test_sd1_clip_skip(sd1, tok, skip):
    model, stack = sd1
    cond, pooled = stack.encode(PROMPT, clip_skip=skip)
    hs, last, ref_pooled = hf_hidden(model, ids_for(tok, PROMPT, 49407))
    with torch.no_grad():
        close(cond, final_norm(model)(hs[skip]))
    close(pooled, ref_pooled)  # pooled always from the last layer


def test_clip_skip_out_of_range(sd1):
    with pytest.raises(ValueError, match="clip_skip"):
        sd1[1].encode("cat", clip_skip=-4)
    with pytest.raises(ValueError, match="clip_skip"):
        sd1[1].encode("cat", clip_skip=0)


def test_sd1_stored_position_ids_are_ignored_and_reported(sd1):
    report = sd1[1].load_report()["clip_l"]
    assert report["layout"] == "hf" and report["unused"] == []
    assert report["ignored"] == ["text_model.embeddings.position_ids"]


def test_sd1_old_layout_without_text_model_level(tok):
    model = hf_model(64, 2, 1, seed=5)
    state = prefixed(hf_layout_state(model, with_root=False), "cond_stage_model.transformer.")
    stack = ClipTextStack.from_checkpoint(state)  # 64 wide -> 1 head derived
    cond, _ = stack.encode(PROMPT)
    close(cond, hf_hidden(model, ids_for(tok, PROMPT, 49407))[1])


def test_multiple_windows(sd1, tok):
    model, stack = sd1
    text = ", ".join(f"word{i} cat" for i in range(40))
    by_role = stack.tokenize(text)
    windows = by_role["clip_l"]
    assert len(windows) >= 2
    cond, pooled = stack.encode(text)
    assert cond.shape == (1, 77 * len(windows), 32)
    for n, w in enumerate(windows):
        hs, last, ref_pooled = hf_hidden(model, [w.ids()])
        close(cond[:, 77 * n:77 * (n + 1)], last)
        if n == 0:
            close(pooled, ref_pooled)
    again, _ = stack.encode(by_role)  # windows in, same result
    close(again, cond, 0)


def test_weighting_math(sd1, tok):
    model, stack = sd1
    text = "a (red:1.5) cat on a [mat]"
    (window,) = stack.tokenize(text)["clip_l"]
    cond, pooled = stack.encode(text)
    z = hf_hidden(model, [window.ids()])[1]
    z_empty = hf_hidden(model, [[49406, 49407] + [49407] * 75])[1]
    w = torch.tensor(window.weights)[None, :, None]
    close(cond, (z - z_empty) * w + z_empty)
    close(pooled, hf_hidden(model, [window.ids()])[2])  # pooled is not weighted
    plain, _ = stack.encode("a red cat on a mat")
    assert (plain - cond).abs().max() > 1e-3


def test_unweighted_prompt_skips_empty_pass(sd1, tok):
    model, stack = sd1
    calls = []
    enc = stack.encoders[0]
    original = enc.forward

    def spy(windows, *a, **k):
        calls.append(len(windows))
        return original(windows, *a, **k)

    enc.forward = spy
    try:
        stack.encode("a red cat")
        stack.encode("a (red) cat")
    finally:
        del enc.forward
    assert calls == [1, 2]


# -- SD2: OpenCLIP ViT-H layout ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd2():
    osd = openclip_state(64, 3, 48, seed=2)
    state = prefixed(osd, "cond_stage_model.model.")
    return osd, ClipTextStack.from_checkpoint(state)


def test_sd2_penultimate_with_final_norm(sd2, tok):
    osd, stack = sd2
    assert stack.family == "sd2" and stack.roles == ["clip_h"]
    ids = torch.tensor(ids_for(tok, PROMPT, 0))  # OpenCLIP pads with 0
    assert stack.tokenize(PROMPT)["clip_h"][0].ids() == ids[0].tolist()
    cond, pooled = stack.encode(PROMPT)
    states, ln_final, ref_pooled = openclip_reference(osd, ids, heads=1)
    close(cond, ln_final(states[-2]))
    close(pooled, ref_pooled)
    hf = openclip_to_hf_model(osd, heads=1)  # transformers on the same weights
    hs, last, text_embeds = hf_hidden(hf, ids.tolist())
    with torch.no_grad():
        close(cond, final_norm(hf)(hs[-2]))
    close(pooled, text_embeds)
    last_layer, _ = stack.encode(PROMPT, clip_skip=-1)
    close(last_layer, last)


def test_sd2_report_and_config(sd2):
    osd, stack = sd2
    assert stack.load_report()["clip_h"] == {"layout": "openclip", "ignored": ["logit_scale"], "unused": []}
    config = stack.encoders[0].model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
            config.vocab_size, config.max_position_embeddings, config.projection_dim, config.hidden_act) == \
        (64, 3, 1, 256, 49408, 77, 48, "gelu")


# -- SDXL: CLIP-L (HF) + bigG (OpenCLIP) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdxl():
    clip_l = hf_model(32, 3, 2, seed=3)
    osd = openclip_state(64, 4, 40, seed=4)
    state = {**prefixed(hf_layout_state(clip_l), "conditioner.embedders.0.transformer."),
             **prefixed(osd, "conditioner.embedders.1.model.")}
    stack = ClipTextStack.from_checkpoint(state, num_heads={"clip_l": 2, "clip_g": None})
    return clip_l, osd, stack


def test_sdxl_concatenated_penultimate_without_norm(sdxl, tok):
    clip_l, osd, stack = sdxl
    assert stack.family == "sdxl" and stack.roles == ["clip_l", "clip_g"] and stack.cond_dim == 96
    cond, pooled = stack.encode(PROMPT)
    assert cond.shape == (1, 77, 96) and pooled.shape == (1, 40)
    hs_l = hf_hidden(clip_l, ids_for(tok, PROMPT, 49407))[0]
    g_ids = torch.tensor(ids_for(tok, PROMPT, 0))
    states, ln_final, ref_pooled = openclip_reference(osd, g_ids, heads=1)
    hf_g = openclip_to_hf_model(osd, heads=1)
    hs_g, _, text_embeds = hf_hidden(hf_g, g_ids.tolist())
    close(cond[..., :32], hs_l[-2])
    close(cond[..., 32:], hs_g[-2])
    close(cond[..., 32:], states[-2])
    close(pooled, text_embeds)
    close(pooled, ref_pooled)


def test_sdxl_clip_skip_minus_one_still_unnormed(sdxl, tok):
    clip_l, osd, stack = sdxl
    cond, pooled = stack.encode(PROMPT, clip_skip=-1)
    close(cond[..., :32], hf_hidden(clip_l, ids_for(tok, PROMPT, 49407))[0][-1])
    hs_g, _, text_embeds = hf_hidden(openclip_to_hf_model(osd, 1), ids_for(tok, PROMPT, 0))
    close(cond[..., 32:], hs_g[-1])
    close(pooled, text_embeds)


def test_sdxl_weighting_per_encoder(sdxl, tok):
    clip_l, osd, stack = sdxl
    text = "a (cat:1.3)"
    by_role = stack.tokenize(text)
    cond, _ = stack.encode(text)
    w = torch.tensor(by_role["clip_l"][0].weights)[None, :, None]
    z_l = hf_hidden(clip_l, [by_role["clip_l"][0].ids()])[0][-2]
    e_l = hf_hidden(clip_l, [[49406, 49407] + [49407] * 75])[0][-2]
    hf_g = openclip_to_hf_model(osd, 1)
    z_g = hf_hidden(hf_g, [by_role["clip_g"][0].ids()])[0][-2]
    e_g = hf_hidden(hf_g, [[49406, 49407] + [0] * 75])[0][-2]
    close(cond, torch.cat([(z_l - e_l) * w + e_l, (z_g - e_g) * w + e_g], dim=-1))


def test_sdxl_refiner(tok):
    osd = openclip_state(64, 2, 32, seed=6)
    stack = ClipTextStack.from_checkpoint(prefixed(osd, "conditioner.embedders.0.model."))
    assert stack.family == "sdxl_refiner" and stack.roles == ["clip_g"]
    cond, pooled = stack.encode(PROMPT)
    states, _, ref_pooled = openclip_reference(osd, torch.tensor(ids_for(tok, PROMPT, 0)), heads=1)
    close(cond, states[-2])
    close(pooled, ref_pooled)


# -- standalone files, derivation, leftovers ----------------------------------------------------------------------------
def test_standalone_hf_file_with_projection(tok):
    model = hf_model(64, 2, 1, act="gelu", projection=24, seed=7)
    state = hf_layout_state(model)
    assert "text_projection.weight" in state
    state["text_model.extra_unknown.weight"] = torch.zeros(3)
    stack = ClipTextStack.from_encoder_weights([state], "sd2")
    _, last, text_embeds = hf_hidden(model, ids_for(tok, PROMPT, 0))
    cond, pooled = stack.encode(PROMPT, clip_skip=-1)
    close(cond, last)
    close(pooled, text_embeds)
    assert stack.load_report()["clip_h"]["unused"] == ["text_model.extra_unknown.weight"]


def test_standalone_sdxl_pair(tok):
    clip_l = hf_model(32, 2, 2, seed=8)
    osd = openclip_state(64, 2, 16, seed=9)
    stack = ClipTextStack.from_encoder_weights([hf_layout_state(clip_l), osd], "sdxl",
                                               num_heads={"clip_l": 2, "clip_g": None})
    cond, pooled = stack.encode("cat")
    close(cond[..., :32], hf_hidden(clip_l, ids_for(tok, "cat", 49407))[0][-2])


def test_openclip_leftovers_are_reported():
    osd = openclip_state(64, 1, 16, seed=10)
    osd["visual.conv1.weight"] = torch.zeros(2)
    osd["transformer.resblocks.0.ls_1.gamma"] = torch.zeros(64)
    converted = convert_openclip(osd)
    assert sorted(converted.unused) == ["transformer.resblocks.0.ls_1.gamma", "visual.conv1.weight"]
    assert converted.ignored == ["logit_scale"]
    # every other source key landed somewhere (the stacked in_proj makes three)
    assert len(converted.state_dict) == len(osd) - 3 + 4


def test_derived_config_sizes():
    model = hf_model(32, 4, 2, seed=11)
    converted = convert_hf(hf_layout_state(model))
    config = derive_text_config(converted, "quick_gelu", num_heads=2)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size,
            config.max_position_embeddings) == (32, 4, 128, 49408, 77)
    with pytest.raises(ValueError, match="num_heads"):
        derive_text_config(converted, "quick_gelu")


def test_heads_rule():
    assert heads_for_width(768) == 12 and heads_for_width(1024) == 16 and heads_for_width(1280) == 20
    assert heads_for_width(64) == 1 and heads_for_width(32, 2) == 2
    with pytest.raises(ValueError):
        heads_for_width(32)
    with pytest.raises(ValueError):
        heads_for_width(64, 3)


def test_incomplete_weights_are_an_error():
    model = hf_model(32, 2, 2, seed=12)
    state = hf_layout_state(model)
    del state["text_model.encoder.layers.1.mlp.fc2.weight"]
    with pytest.raises(ValueError, match="missing"):
        ClipTextStack.from_encoder_weights([state], "sd1", num_heads=2)


def test_family_detection():
    assert detect_text_family({"cond_stage_model.transformer.text_model.x": 0}) == "sd1"
    assert detect_text_family({"cond_stage_model.model.token_embedding.weight": 0}) == "sd2"
    assert detect_text_family({"conditioner.embedders.0.transformer.a": 0, "conditioner.embedders.1.model.b": 0}) \
        == "sdxl"
    assert detect_text_family({"conditioner.embedders.0.model.b": 0}) == "sdxl_refiner"
    with pytest.raises(ValueError):
        detect_text_family({"model.diffusion_model.x": 0})


def test_half_precision_weights_load_and_run(tok):
    model = hf_model(32, 2, 2, seed=13)
    state = {k: v.to(torch.bfloat16) for k, v in hf_layout_state(model).items()}
    stack = ClipTextStack.from_encoder_weights([state], "sd1", num_heads=2)
    assert stack.encoders[0].model.text_model.embeddings.token_embedding.weight.dtype == torch.bfloat16 \
        if hasattr(stack.encoders[0].model, "text_model") else \
        stack.encoders[0].model.embeddings.token_embedding.weight.dtype == torch.bfloat16
    cond, _ = stack.encode("cat")
    assert cond.dtype == torch.float32
    ref = hf_hidden(model, ids_for(tok, "cat", 49407))[1]
    assert (cond - ref).abs().max() < 0.1
