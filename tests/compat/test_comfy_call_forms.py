"""Packs use built-in nodes and CLIP the way ComfyUI's API spells them: a loader subclass overriding
`load_checkpoint` and calling super(), positional calls in ComfyUI's method order (`decode(vae, samples)`),
legacy V1 method names of nodes ComfyUI has rewritten as V3, and tokenize -> edit -> encode_from_tokens."""
import os
import shutil

import pytest
import torch

import nodes as engine_nodes


@pytest.fixture
def with_checkpoint(pack_engine, tiny_models):
    folder = os.path.join(pack_engine.services.paths.models_dir, "checkpoints")
    os.makedirs(folder, exist_ok=True)
    shutil.copy(tiny_models.checkpoint("sd1"), os.path.join(folder, "tiny.safetensors"))
    return pack_engine


def test_loader_subclass_override_runs_and_calls_the_builtin(with_checkpoint):
    engine = with_checkpoint
    cls = engine_nodes.NODE_CLASS_MAPPINGS["FeatCheckpointLoader"]
    assert cls.FUNCTION == "load_checkpoint"  # ComfyUI's method name, inherited from the built-in
    model, clip, vae = cls().load_checkpoint("tiny.safetensors", clip_skip=-2)
    assert clip.layer_idx == -2 and model.model.model_type is not None and vae is not None
    plain_clip = engine_nodes.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")[1]
    skipped = engine_nodes.CLIPSetLastLayer().set_last_layer(plain_clip, -2)[0]
    ours = engine_nodes.CLIPTextEncode().encode(clip, "a red cube")[0][0][0]  # encode(clip, text): ComfyUI's order
    reference = engine_nodes.CLIPTextEncode().encode(skipped, "a red cube")[0][0][0]
    torch.testing.assert_close(ours, reference)
    other = engine_nodes.CLIPTextEncode().encode(plain_clip, "a red cube")[0][0][0]
    assert not torch.allclose(ours, other)  # the subclass's clip_skip really took effect


def test_subclass_runs_in_a_prompt(with_checkpoint):
    prompt = {
        "load": {"class_type": "FeatCheckpointLoader", "inputs": {"ckpt_name": "tiny.safetensors", "clip_skip": -2}},
        "enc": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["load", 1], "text": "x"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {"model": ["load", 0], "seed": 1, "steps": 1, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "normal",
                                                    "positive": ["enc", 0], "negative": ["enc", 0],
                                                    "latent_image": ["lat", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["load", 2]}},
        "save": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }
    outcome, _ = with_checkpoint.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["save"]["images"][0]["type"] == "temp"


def test_positional_calls_follow_comfyui_method_order(with_checkpoint):
    _, _, vae = engine_nodes.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")
    latent = engine_nodes.EmptyLatentImage().generate(64, 64, 1)[0]
    image = engine_nodes.VAEDecode().decode(vae, latent)[0]  # vae first, as ComfyUI's decode(self, vae, samples)
    assert image.shape == (1, 64, 64, 3)
    again = engine_nodes.VAEEncode().encode(vae, image)[0]   # encode(self, vae, pixels)
    assert again["samples"].shape == (1, 4, 8, 8)
    with pytest.raises(TypeError, match="denoise=0.5 is not supported"):
        engine_nodes.KSamplerAdvanced().sample(None, "enable", 1, 1, 1.0, "euler", "normal", None, None, latent,
                                              0, 1, "disable", denoise=0.5)


def test_legacy_v1_method_names_of_v3_builtins(bound):
    import comfy_extras.nodes_gits as gits
    sigmas = gits.GITSScheduler().get_sigmas(1.20, 10, denoise=1.0)[0]
    assert sigmas.shape == (11,) and float(sigmas[-1]) == 0.0
    assert float(sigmas[0]) == pytest.approx(14.61464119)


def test_tokenize_edit_encode_matches_prompt_weights(with_checkpoint):
    clip = engine_nodes.CheckpointLoaderSimple().load_checkpoint("tiny.safetensors")[1]
    tokens = clip.tokenize("a red cube")
    assert list(tokens) == ["l"] and len(tokens["l"][0]) == 77
    start, end = tokens["l"][0][0], tokens["l"][0][1 + len(clip.stack.tokenizer.encode("a red cube"))]
    assert start == (clip.tokenizer.clip_l.start_token, 1.0) and end[0] == clip.tokenizer.end_token
    hand = engine_nodes.NODE_CLASS_MAPPINGS["FeatEncodeByHand"]().encode(clip, "a red cube", 1.3)[0][0][0]
    weighted = engine_nodes.CLIPTextEncode().encode(clip, "(a red cube:1.3)")[0][0][0]
    # every token (start, end and padding included) at 1.3 vs. the prompt syntax, which leaves them at 1.0
    plain = engine_nodes.CLIPTextEncode().encode(clip, "a red cube")[0][0][0]
    assert not torch.allclose(hand, plain)
    n = 1 + len(clip.stack.tokenizer.encode("a red cube"))
    torch.testing.assert_close(hand[:, 1:n], weighted[:, 1:n])  # the words themselves weigh the same
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a red cube"), return_pooled=True)
    torch.testing.assert_close(cond, plain)
    assert pooled.shape[0] == 1
    triples = clip.tokenize("a (red:1.3) cube", return_word_ids=True)["l"][0]
    assert [i for _, _, i in triples[:6]] == [0, 1, 2, 3, 0, 0]  # segments "a ", "red", " cube"; start/end 0
    assert [w for _, w, _ in triples[:5]] == [1.0, 1.0, pytest.approx(1.3), 1.0, 1.0]
    torch.testing.assert_close(clip.encode_from_tokens({"l": [triples]}),
                               engine_nodes.CLIPTextEncode().encode(clip, "a (red:1.3) cube")[0][0][0])
    from comfy import sd1_clip, sdxl_clip
    assert isinstance(clip.tokenizer, sd1_clip.SD1Tokenizer) and isinstance(clip.cond_stage_model,
                                                                              sd1_clip.SD1ClipModel)
    assert not isinstance(clip.cond_stage_model, sdxl_clip.SDXLClipModel)
