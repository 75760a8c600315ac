"""SDXL "revision": unCLIPConditioning's image embedding stands in for the pooled text vector, noise-augmented on
the Karlo prior's schedule with a draw seeded by the sampler's seed - 10 (the reference's numbers). The schedule is
checked against diffusers' squaredcos_cap_v2; a workflow with CLIPVisionLoader -> CLIPVisionEncode ->
unCLIPConditioning on a tiny SDXL changes the image, strength 0 does not, and a ViT of the wrong width is refused."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.sampling.unclip import karlo_sqrt_alphas_cumprod, unclip_pooled
from diffusion.synthetic_clip_vision import make_clip_vision
from diffusion.unet import tiny_sdxl_config
from tests.nodes.test_model_nodes import ModelEngine
from tests.nodes.test_sd3_nodes import image

POOLED = tiny_sdxl_config().adm_in_channels - 6 * 256


def test_the_schedule_is_the_squared_cosine_one():
    from diffusers import DDPMScheduler
    cumprod = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    keep, add = karlo_sqrt_alphas_cumprod()
    torch.testing.assert_close(keep, cumprod.sqrt().float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(add, (1 - cumprod).sqrt().float(), rtol=1e-3, atol=5e-6)  # diffusers: fp32 cumprod


def _entry(embeds, strength=1.0, augmentation=0.0):
    return {"clip_vision_output": {"image_embeds": embeds}, "strength": strength, "noise_augmentation": augmentation}


def test_one_embedding_is_augmented_with_the_seeded_draw():
    embeds = torch.randn(1, 8)
    keep, add = karlo_sqrt_alphas_cumprod()
    level = round(999 * 0.3)
    noise = torch.randn(1, 8, generator=torch.Generator().manual_seed(42 - 10))
    expected = 0.7 * (keep[level] * embeds + add[level] * noise)
    torch.testing.assert_close(unclip_pooled([_entry(embeds, 0.7, 0.3)], 42, 8), expected)
    # a small seed wraps around as torch's seeding does
    noise = torch.randn(1, 8, generator=torch.Generator().manual_seed(2 ** 64 - 7))
    torch.testing.assert_close(unclip_pooled([_entry(embeds)], 3, 8), keep[0] * embeds + add[0] * noise)


def test_several_embeddings_are_summed_and_augmented_again():
    embeds = torch.randn(2, 8)
    keep, add = karlo_sqrt_alphas_cumprod()
    generator = torch.Generator().manual_seed(5 - 10)
    first = torch.randn(1, 8, generator=generator)
    merge = torch.randn(1, 8, generator=generator)
    parts = [0.5 * (keep[0] * e.reshape(1, -1) + add[0] * first) for e in embeds]
    expected = keep[0] * (parts[0] + parts[1]) + add[0] * merge
    torch.testing.assert_close(unclip_pooled([_entry(embeds, 0.5)], 5, 8), expected)


def test_an_embedding_of_another_width_is_refused():
    with pytest.raises(ValueError, match="12-wide but this model takes 8"):
        unclip_pooled([_entry(torch.randn(1, 12))], 0, 8)


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sdxl"), os.path.join(eng.models("checkpoints"), "sdxl.safetensors"))
    folder = eng.models("clip_vision")
    os.makedirs(folder, exist_ok=True)
    save_file(make_clip_vision(POOLED), os.path.join(folder, "clip_vision_g.safetensors"))
    save_file(make_clip_vision(POOLED + 8, seed=1), os.path.join(folder, "wide.safetensors"))
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(eng.services.paths.input_dir, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
        os.path.join(eng.services.paths.input_dir, "ref.png"))
    return eng


def _prompt(strength, vision="clip_vision_g.safetensors"):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": vision}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "enc": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["cv", 0], "image": ["img", 0],
                                                             "crop": "center"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["ckpt", 1]}},
        "unclip": {"class_type": "unCLIPConditioning", "inputs": {
            "conditioning": ["pos", 0], "clip_vision_output": ["enc", 0], "strength": strength,
            "noise_augmentation": 0.1}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": 3, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["unclip", 0], "negative": ["neg", 0],
            "latent_image": ["latent", 0], "denoise": 1.0}},
    }


def test_revision_changes_the_image_and_strength_zero_does_not(engine):
    plain_prompt = _prompt(1.0)
    plain_prompt["sample"]["inputs"]["positive"] = ["pos", 0]
    results = {}
    for name, prompt in (("plain", plain_prompt), ("zero", _prompt(0.0)), ("revision", _prompt(1.0)),
                         ("again", _prompt(1.0))):
        prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}}
        prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": name}}
        outcome, _ = engine.run(prompt)
        assert outcome.status == "success", outcome.error
        results[name] = image(engine, outcome)
    assert np.array_equal(results["zero"], results["plain"])
    assert not np.array_equal(results["revision"], results["plain"])
    assert np.array_equal(results["revision"], results["again"])


def test_a_clip_vision_of_the_wrong_width_is_a_clear_error(engine):
    prompt = _prompt(1.0, "wide.safetensors")
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": ["sample", 0]}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "error"
    assert f"{POOLED + 8}-wide but this model takes {POOLED}" in str(outcome.error)
