"""SD3 workflows end to end on tiny random models: the checkpoint workflow, the same model from separate files
(UNETLoader + TripleCLIPLoader + VAELoader), CLIPTextEncodeSD3, flow sampling checked in closed form."""
import os

import numpy as np
import pytest
import torch

from tests.nodes.test_model_nodes import ModelEngine


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    links = {"checkpoints": [("sd3.5_medium_incl_clips.safetensors", "checkpoint"),
                             ("sd3.5_medium.safetensors", "checkpoint_no_text")],
             "diffusion_models": [("sd3.5_medium_mmdit.safetensors", "diffusion_model")],
             "vae": [("sd3_vae.safetensors", "vae")],
             "text_encoders": [("clip_l.safetensors", "clip_l"), ("clip_g.safetensors", "clip_g"),
                               ("t5xxl_fp16.safetensors", "t5xxl")]}
    for folder, names in links.items():
        target = eng.models(folder)
        os.makedirs(target, exist_ok=True)
        for name, kind in names:
            os.symlink(tiny_models.sd3(kind), os.path.join(target, name))
    return eng


def sd3_prompt(model, clip, vae, steps=3, seed=7, negative=None, sampler="euler", cfg=4.5):
    prompt = {
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a red fox", "clip": clip}},
        "neg": negative or {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": "sgm_uniform", "positive": ["pos", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "sd3"}},
    }
    return prompt


def checkpoint_prompt(**kwargs):
    prompt = sd3_prompt(["ms", 0], ["ckpt", 1], ["ckpt", 2], **kwargs)
    prompt["ckpt"] = {"class_type": "CheckpointLoaderSimple",
                      "inputs": {"ckpt_name": "sd3.5_medium_incl_clips.safetensors"}}
    prompt["ms"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["ckpt", 0], "shift": 3.0}}
    return prompt


def image(engine, outcome, node="save"):
    from PIL import Image
    info = outcome.outputs[node]["images"][0]
    return np.asarray(Image.open(os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"])))


def test_checkpoint_workflow_makes_the_same_image_for_the_same_seed(engine):
    first, _ = engine.run(checkpoint_prompt())
    assert first.status == "success", first.error
    pixels = image(engine, first)
    assert pixels.shape == (48, 64, 3) and pixels.std() > 0
    again, _ = engine.run(checkpoint_prompt())
    assert np.array_equal(image(engine, again), pixels)
    other, _ = engine.run(checkpoint_prompt(seed=8))
    assert not np.array_equal(image(engine, other), pixels)


def test_separate_files_give_the_checkpoints_image(engine):
    bundled, _ = engine.run(checkpoint_prompt())
    prompt = sd3_prompt(["unet", 0], ["clips", 0], ["vae", 0])
    prompt["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "sd3.5_medium_mmdit.safetensors",
                                                            "weight_dtype": "default"}}
    prompt["clips"] = {"class_type": "TripleCLIPLoader", "inputs": {
        "clip_name1": "t5xxl_fp16.safetensors", "clip_name2": "clip_l.safetensors", "clip_name3": "clip_g.safetensors"}}
    prompt["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sd3_vae.safetensors"}}
    separate, _ = engine.run(prompt)
    assert separate.status == "success", separate.error
    # the checkpoint's model samples with its own SD3 schedule (shift 3.0), as ModelSamplingSD3 sets it
    assert np.array_equal(image(engine, separate), image(engine, bundled))


def test_checkpoint_without_text_encoders_needs_a_clip_loader(engine):
    prompt = sd3_prompt(["ckpt", 0], ["ckpt", 1], ["ckpt", 2])
    prompt["ckpt"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "error" and "no text encoder" in str(outcome.error)
    prompt["clips"] = {"class_type": "TripleCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors", "clip_name3": "t5xxl_fp16.safetensors"}}
    for node in ("pos", "neg"):
        prompt[node]["inputs"]["clip"] = ["clips", 0]
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error


def test_clip_text_encode_sd3_padding_modes(engine):
    from model_management.checkpoints import load_checkpoint
    clip = load_checkpoint(os.path.join(engine.models("checkpoints"), "sd3.5_medium_incl_clips.safetensors"),
                           want_model=False, want_vae=False).clip
    from nodes.text_encode import CLIPTextEncodeSD3
    node = CLIPTextEncodeSD3()
    same = node.run(None, clip, "a fox", "a fox", "a fox", "none")[0][0]
    plain, pooled, _ = clip.encode("a fox")
    assert torch.equal(same[0], plain) and torch.equal(same[1]["pooled_output"], pooled)
    no_t5 = node.run(None, clip, "a fox", "a fox", "", "none")[0][0][0]
    assert no_t5.shape[1] == 77 and torch.equal(no_t5, plain[:, :77])
    padded = node.run(None, clip, "a fox", "a fox", "", "empty_prompt")[0][0][0]
    assert padded.shape[1] == 154 and torch.equal(padded[:, 77:], clip.encode("")[0][:, 77:])
    # an empty CLIP-L prompt is filled with the empty prompt's windows to match CLIP-G's
    l_empty = node.run(None, clip, "", "a fox", "a fox", "none")[0][0][0]
    assert l_empty.shape == plain.shape and not torch.equal(l_empty[..., :64], plain[..., :64])


def test_one_euler_step_is_the_flow_formula(engine):
    """1 step from sigma 1 to 0 with cfg 1: samples = process_out(noise - v(noise, t=1000)); the latent format's
    shift and scale and the velocity parameterisation all show in the result."""
    from diffusion.sampling.ksampler import prepare_noise
    from model_management.checkpoints import load_checkpoint
    prompt = checkpoint_prompt(steps=1, cfg=1.0)
    prompt["show"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "l"}}
    del prompt["decode"], prompt["save"]
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    from safetensors.torch import load_file
    saved = os.path.join(engine.services.paths.output_dir, outcome.outputs["show"]["latents"][0]["filename"])
    got = load_file(saved)["latent_tensor"]
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "sd3.5_medium_incl_clips.safetensors"))
    cond, pooled, _ = loaded.clip.encode("a photo of a red fox")
    noise = prepare_noise(torch.zeros(1, 16, 6, 8), 7)
    with torch.no_grad():
        v = loaded.model.unet(noise, torch.tensor([1000.0]), cond, y=pooled)
    expected = (noise - v) / 1.5305 + 0.0609
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
