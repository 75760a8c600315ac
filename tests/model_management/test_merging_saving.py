"""Merges as patches (formulas per parameter, composition with LoRAs and with each other, block ratios, CLIP merges,
family checks) and saving (checkpoint / VAE / CLIP round trips with patches baked in, layouts, metadata)."""
import os

import pytest
import torch

from model_management import merging, saving
from model_management.checkpoints import load_checkpoint, load_vae_file
from model_management.file_loading import load_state_dict, read_safetensors_metadata
from model_management.merging import MergeError, block_ratio
from model_management.model_objects import DiffusionModel, _patched
from model_management.weight_patches import (DiffPatch, LoraPatch, MergePatch, PatchedWeights, patched_state,
                                             patched_weight)

Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"  # [32, 32] in tiny SD1
TQ = "encoders.0.model.encoder.layers.0.self_attn.q_proj.weight"  # CLIP-L, [64, 64]


def load(tiny_models, family="sd1", seed=0, **kw):
    return load_checkpoint(tiny_models.checkpoint(family, seed=seed, **kw) if seed else
                           tiny_models.checkpoint(family, **kw))


def weights(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def snapshot(module):
    return {n: t.detach().clone() for n, t in module.state_dict(keep_vars=True).items()}


def same(module, before):
    state = module.state_dict(keep_vars=True)
    return set(state) == set(before) and all(torch.equal(state[n], before[n]) for n in before)


def lora(shape, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return LoraPatch(torch.randn(shape[0], 2, generator=g) * scale, torch.randn(2, shape[1], generator=g) * scale)


def merged_weights(model):
    with model.patched() as unet:
        return weights(unet)


def unet_out(model, context_dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, context_dim, generator=g)
    y = None
    label = getattr(model.unet, "label_emb", None)
    if label is not None:
        y = torch.randn(1, label[0][0].in_features, generator=g)
    with torch.no_grad(), model.patched():
        return model.forward(x, torch.tensor([500.0]), ctx, y=y)


def assert_close_all(got, expected, atol=1e-5):
    assert set(got) == set(expected)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=atol), name


@pytest.fixture
def pair(tiny_models):
    return load(tiny_models), load(tiny_models, seed=7)


# -- the patch mechanism ---------------------------------------------------------------------------------------

def test_needs_weight_patches_get_the_running_value_and_old_patches_still_work():
    seen = []

    class Probe:
        needs_weight = True

        def delta(self, shape, dtype=torch.float32, device=None, weight=None):
            seen.append(weight.clone())
            return torch.zeros(shape)

    class OldStyle:  # the original signature, no weight argument
        def delta(self, shape, dtype=torch.float32, device=None):
            return torch.ones(shape)

    w = torch.arange(4.0).reshape(2, 2)
    out = patched_weight(w, [(DiffPatch(torch.full((2, 2), 10.0)), 0.5), (Probe(), 1.0), (OldStyle(), 2.0)])
    assert torch.equal(seen[0], w + 5.0) and torch.equal(out, w + 7.0)


def test_merge_patch_reads_the_other_model_lazily_with_its_patches(pair):
    (a, b) = pair
    w2 = b.model.unet.get_parameter(Q)
    source = PatchedWeights(b.model._unet, [(Q, DiffPatch(torch.ones(32, 32)), 2.0)])
    patch = MergePatch(source, Q, 0.0, 1.0)
    assert patch.tensors() == [] and source.weight(Q).shape == (32, 32)
    assert torch.equal(patch.delta((32, 32)), w2 + 2.0)
    unpatched = PatchedWeights(b.model._unet).weight("out.2.bias")
    assert unpatched.data_ptr() == b.model.unet.get_parameter("out.2.bias").data_ptr()  # a reference, no copy
    with pytest.raises(ValueError, match="merge patch"):
        patch.delta((16, 64))


# -- UNet merges -------------------------------------------------------------------------------------------------

def test_simple_add_subtract_formulas_and_sources_untouched(pair):
    a, b = pair
    w1, w2 = weights(a.model.unet), weights(b.model.unet)
    before1, before2 = snapshot(a.model.unet), snapshot(b.model.unet)
    simple = merging.merge_simple(a.model, b.model, 0.3)
    assert not a.model.patches and len(simple.patches) == len(w1)
    assert all(isinstance(p, MergePatch) and p.tensors() == [] for _, p, _ in simple.patches)
    assert_close_all(merged_weights(simple), {n: 0.3 * w1[n] + 0.7 * w2[n] for n in w1})
    assert_close_all(merged_weights(merging.merge_add(a.model, b.model)), {n: w1[n] + w2[n] for n in w1})
    sub = merging.merge_subtract(a.model, b.model, 0.5)
    assert_close_all(merged_weights(sub), {n: 0.5 * (w1[n] - w2[n]) for n in w1})
    assert_close_all(merged_weights(merging.merge_subtract(a.model, b.model, 1.0)), {n: w1[n] - w2[n] for n in w1})
    assert same(a.model.unet, before1) and same(b.model.unet, before2)
    unchanged = merging.merge_simple(a.model, b.model, 1.0)
    assert unchanged.patches == [] and torch.equal(unet_out(unchanged), unet_out(a.model))
    out = unet_out(simple)
    assert not torch.allclose(out, unet_out(a.model)) and same(a.model.unet, before1)


def test_merge_of_merges_and_loras_compose(tiny_models, pair):
    a, b = pair
    c = load(tiny_models, seed=11)
    wa, wb, wc = weights(a.model.unet), weights(b.model.unet), weights(c.model.unet)
    ab = merging.merge_simple(a.model, b.model, 0.3)
    nested2 = merging.merge_simple(c.model, ab, 0.5)  # a merge as model2
    assert_close_all(merged_weights(nested2), {n: 0.5 * wc[n] + 0.5 * (0.3 * wa[n] + 0.7 * wb[n]) for n in wa})
    nested1 = merging.merge_simple(ab, c.model, 0.6)  # a merge as model1
    assert_close_all(merged_weights(nested1), {n: 0.6 * (0.3 * wa[n] + 0.7 * wb[n]) + 0.4 * wc[n] for n in wa})

    la = lora((32, 32), 1)
    dl = la.delta((32, 32))
    lora_b = b.model.with_patches([(Q, la, 1.0)])  # a LoRA on model2 is part of what is merged
    got = merged_weights(merging.merge_simple(a.model, lora_b, 0.25))
    assert torch.allclose(got[Q], 0.25 * wa[Q] + 0.75 * (wb[Q] + dl), atol=1e-5)
    lora_a = a.model.with_patches([(Q, la, 1.0)])  # a LoRA on model1 before the merge is blended too
    got = merged_weights(merging.merge_simple(lora_a, b.model, 0.25))
    assert torch.allclose(got[Q], 0.25 * (wa[Q] + dl) + 0.75 * wb[Q], atol=1e-5)
    after = merging.merge_simple(a.model, b.model, 0.25).with_patches([(Q, la, 0.5)])  # a LoRA after the merge
    got = merged_weights(after)
    assert torch.allclose(got[Q], 0.25 * wa[Q] + 0.75 * wb[Q] + 0.5 * dl, atol=1e-5)
    other = "out.2.weight"
    assert torch.allclose(got[other], 0.25 * wa[other] + 0.75 * wb[other], atol=1e-6)
    assert b.model.patches == [] and a.model.patches == []


def test_merging_a_model_with_itself_plus_a_lora(pair):
    a, _ = pair  # both sides share one module: each parameter reads model2's value before writing its own
    w, before = weights(a.model.unet), snapshot(a.model.unet)
    la = lora((32, 32), 2)
    merged = merging.merge_simple(a.model, a.model.with_patches([(Q, la, 1.0)]), 0.5)
    got = merged_weights(merged)
    assert torch.allclose(got[Q], w[Q] + 0.5 * la.delta((32, 32)), atol=1e-5)
    assert torch.allclose(got["out.2.weight"], w["out.2.weight"], atol=1e-6)
    assert same(a.model.unet, before)


def test_block_ratios_land_on_their_blocks(pair):
    a, b = pair
    w1, w2 = weights(a.model.unet), weights(b.model.unet)
    ratios = {"input": 0.2, "middle": 0.5, "out": 0.9}
    got = merged_weights(merging.merge_blocks(a.model, b.model, ratios))
    seen = set()
    for name in w1:
        r = 0.5 if name.startswith("middle_block.") else 0.9 if name.startswith(("output_blocks.", "out.")) else 0.2
        seen.add(r)
        assert torch.allclose(got[name], r * w1[name] + (1 - r) * w2[name], atol=1e-5), name
    assert seen == {0.2, 0.5, 0.9}
    assert block_ratio("time_embed.0.weight", ratios) == 0.2 and block_ratio("label_emb.0.0.bias", ratios) == 0.2
    assert block_ratio("out.0.weight", ratios) == 0.9 and block_ratio("output_blocks.3.0.skip", ratios) == 0.9
    assert block_ratio("input_blocks.4.1.proj_in.weight", {"input": 0.1, "input_blocks.4": 0.7}) == 0.7


def test_residency_handles_survive_eviction(tiny_models):
    from model_management.residency import ModelResidency
    res = ModelResidency()
    a = res.load_checkpoint(tiny_models.checkpoint("sd1"))
    b = res.load_checkpoint(tiny_models.checkpoint("sd1", seed=7))
    merged = merging.merge_simple(a.model, b.model, 0.4)
    expected = merged_weights(merged)
    res.unload_all()  # the merge holds handles, not modules: a later use reads the files again
    assert_close_all(merged_weights(merged), expected, atol=0)


def test_family_and_size_mismatches(tiny_models, pair):
    a, _ = pair
    xl = load(tiny_models, "sdxl")
    with pytest.raises(MergeError, match=r"SDXL.*SD1\.x|SD1\.x.*SDXL"):
        merging.merge_simple(a.model, xl.model, 0.5)
    with pytest.raises(MergeError, match="families differ"):
        merging.merge_clip_simple(a.clip, xl.clip, 0.5)
    from diffusion.unet import UNetModel, tiny_sd1_config
    other_size = DiffusionModel(UNetModel(tiny_sd1_config(context_dim=32)).eval(), a.model.family)
    with pytest.raises(MergeError, match="attention weights do not line up"):
        merging.merge_add(a.model, other_size)
    inpaint = load(tiny_models, "sd1", inpainting=True)  # same family, 9-channel input conv: skipped and reported
    notes = []
    merged = merging.merge_simple(inpaint.model, a.model, 0.5, report=notes.append)
    assert notes and "input_blocks.0.0.weight" in notes[0]
    assert "input_blocks.0.0.weight" not in {n for n, _, _ in merged.patches}
    got = merged_weights(merged)
    assert torch.equal(got["input_blocks.0.0.weight"], inpaint.model.unet.get_parameter("input_blocks.0.0.weight"))


# -- CLIP merges -------------------------------------------------------------------------------------------------

def test_clip_merge(tiny_models):
    c1 = load(tiny_models, "sdxl").clip
    c2 = load(tiny_models, "sdxl", seed=7).clip
    w1, w2 = weights(c1.stack), weights(c2.stack)
    base1, base2 = c1.encode("a red fox")[0], c2.encode("a red fox")[0]
    same_as_1 = merging.merge_clip_simple(c1, c2, 1.0)
    assert same_as_1.patches == [] and torch.equal(same_as_1.encode("a red fox")[0], base1)
    merged = merging.merge_clip_simple(c1, c2, 0.4)
    names = {n for n, _, _ in merged.patches}
    assert names == set(w1) and not any("pooled_encoder" in n or "position_ids" in n for n in names)
    state = patched_state(c1.stack, merged.patches)
    assert_close_all(state, {n: 0.4 * w1[n] + 0.6 * w2[n] for n in w1})
    with _patched(c1.stack, merged.patches) as stack:  # in place, through the alias too
        assert torch.allclose(stack.pooled_encoder.projection.weight,
                              0.4 * w1["encoders.1.model.text_projection.weight"]
                              + 0.6 * w2["encoders.1.model.text_projection.weight"], atol=1e-6)
    cond = merged.encode("a red fox")[0]
    assert not torch.allclose(cond, base1) and not torch.allclose(cond, base2)
    assert torch.allclose(merging.merge_clip_simple(c1, c2, 0.0).encode("a red fox")[0], base2, atol=1e-5)
    assert all(torch.equal(p, w1[n]) for n, p in c1.stack.named_parameters())
    lora_c2 = c2.with_patches([("encoders.0.model.encoder.layers.0.self_attn.q_proj.weight", lora((64, 64), 3), 1.0)])
    got = patched_state(c1.stack, merging.merge_clip_simple(c1, lora_c2, 0.5).patches)[TQ]
    assert torch.allclose(got, 0.5 * w1[TQ] + 0.5 * (w2[TQ] + lora((64, 64), 3).delta((64, 64))), atol=1e-5)


# -- saving ------------------------------------------------------------------------------------------------------

def _patched_inputs(tiny_models, family):
    a, b = load(tiny_models, family), load(tiny_models, family, seed=7)
    model = merging.merge_simple(a.model, b.model, 0.3)
    names = dict(model.unet.named_parameters())
    q = next(n for n in names if n.endswith("attn1.to_q.weight"))
    model = model.with_patches([(q, lora(names[q].shape, 5), 0.8)])
    clip = merging.merge_clip_simple(a.clip, b.clip, 0.6)
    text = dict(clip.stack.named_parameters())
    tq = next(n for n in text if n.endswith("layers.0.self_attn.q_proj.weight"))
    clip = clip.with_patches([(tq, lora(text[tq].shape, 6), 1.0)])
    return a, b, model, clip


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_checkpoint_round_trip(tmp_path, tiny_models, family):
    a, b, model, clip = _patched_inputs(tiny_models, family)
    before = snapshot(a.model.unet), snapshot(b.model.unet), snapshot(a.clip.stack)
    path = saving.save_checkpoint(str(tmp_path / "merged.safetensors"), model, clip, a.vae)
    assert (same(a.model.unet, before[0]) and same(b.model.unet, before[1]) and same(a.clip.stack, before[2]))
    saved = load_state_dict(path)
    original = load_state_dict(tiny_models.checkpoint(family))
    expected_keys = {k for k in original if k.startswith(("model.", "first_stage_model.", "cond_stage_model.",
                                                          "conditioner.")) and not k.endswith("position_ids")}
    assert set(saved) == expected_keys  # exactly the released layout (fused q/k/v, OpenCLIP names, prefixes)
    assert all(saved[k].shape == original[k].shape for k in saved)
    loaded = load_checkpoint(path)
    assert loaded.family.name == family and loaded.leftovers == []
    assert all(not r["unused"] for r in loaded.clip.stack.load_report().values())
    context = {"sd1": 64, "sd2": 64, "sdxl": 128, "sdxl_refiner": 64}[family]
    assert torch.allclose(unet_out(loaded.model, context), unet_out(model, context), atol=1e-5)
    for text in ("a red fox", "(castle:1.3) at night"):
        got, exp = loaded.clip.encode(text), clip.encode(text)
        assert torch.allclose(got[0], exp[0], atol=1e-6) and torch.allclose(got[1], exp[1], atol=1e-6)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.vae.decode(latent), a.vae.decode(latent))
    meta = read_safetensors_metadata(path)
    assert meta["modelspec.architecture"] == saving.architecture(model)
    assert meta["modelspec.prediction_type"] == "epsilon"
    assert os.path.basename(tiny_models.checkpoint(family)) in meta["tessera.source"]
    assert os.path.basename(tiny_models.checkpoint(family, seed=7)) in meta["tessera.source"]


def test_v_prediction_is_marked_and_dtype_is_optional(tmp_path, tiny_models):
    v = load(tiny_models, "sd2", v_prediction=True)
    assert v.model.prediction == "v"
    path = saving.save_checkpoint(str(tmp_path / "v.safetensors"), v.model, v.clip, v.vae, dtype=torch.float16)
    meta = read_safetensors_metadata(path)
    assert meta["modelspec.prediction_type"] == "v" and meta["modelspec.architecture"] == "stable-diffusion-v2-768-v"
    state = load_state_dict(path)
    assert "v_pred" in state and state["model.diffusion_model.out.2.weight"].dtype == torch.float16
    assert load_checkpoint(path).model.prediction == "v"
    sd1 = load(tiny_models)
    with pytest.raises(saving.SaveError, match="sd1 text encoder"):
        saving.checkpoint_state(v.model, sd1.clip, v.vae)


def test_vae_and_clip_files_round_trip(tmp_path, tiny_models):
    from diffusion.text import ClipTextStack
    from model_management.text_encoder_files import load_text_encoder_files
    sd1 = load(tiny_models)
    path = saving.save_vae(str(tmp_path / "vae.safetensors"), sd1.vae)
    state = load_state_dict(path)
    assert "decoder.conv_in.weight" in state and not any(k.startswith("first_stage_model.") for k in state)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(load_vae_file(path).decode(latent), sd1.vae.decode(latent))

    clip = sd1.clip.with_patches([(TQ, lora((64, 64), 4), 1.0)])
    path = saving.save_text_encoder(str(tmp_path / "l.safetensors"), clip, "clip_l")
    assert "text_model.encoder.layers.0.self_attn.q_proj.weight" in load_state_dict(path)
    reloaded = load_text_encoder_files([path], "stable_diffusion")
    assert torch.allclose(reloaded.encode("a cat")[0], clip.encode("a cat")[0], atol=1e-6)
    with pytest.raises(saving.SaveError, match="no clip_g"):
        saving.save_text_encoder(str(tmp_path / "g.safetensors"), clip, "clip_g")

    xl = load(tiny_models, "sdxl").clip
    states = saving.text_encoder_states(xl)
    assert list(states) == ["clip_l", "clip_g"] and "text_projection.weight" in states["clip_g"]
    paths = [saving.save_text_encoder(str(tmp_path / f"{r}.safetensors"), xl, r) for r in ("clip_g", "clip_l")]
    reloaded = load_text_encoder_files(paths, "sdxl")  # given bigG first: sorted back by shape
    got, exp = reloaded.encode("a castle"), xl.encode("a castle")
    assert torch.allclose(got[0], exp[0], atol=1e-6) and torch.allclose(got[1], exp[1], atol=1e-6)

    h = load(tiny_models, "sd2").clip  # HF layout for OpenCLIP-H too (tiny widths hide its kind from CLIPLoader)
    state = saving.text_encoder_states(h)["clip_h"]
    stack = ClipTextStack.from_encoder_weights([state], "sd2", dtype=torch.float32)
    assert torch.allclose(stack.encode("a tree")[0], h.encode("a tree")[0], atol=1e-6)
