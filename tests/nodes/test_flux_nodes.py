"""Flux workflows end to end on tiny random models: the checkpoint workflow, the same model from separate files
(UNETLoader + DualCLIPLoader + VAELoader), CLIPTextEncodeFlux and FluxGuidance, and one sampling step in closed
form (the distilled guidance reaching the transformer)."""
import os

import numpy as np
import pytest
import torch

from tests.nodes.test_model_nodes import ModelEngine
from tests.nodes.test_sd3_nodes import image


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    links = {"checkpoints": [("flux1-dev-fp8.safetensors", tiny_models.flux("checkpoint")),
                             ("flux1-schnell-fp8.safetensors", tiny_models.flux("schnell"))],
             "diffusion_models": [("flux1-dev.safetensors", tiny_models.flux("diffusion_model"))],
             "vae": [("ae.safetensors", tiny_models.flux("vae"))],
             "text_encoders": [("clip_l.safetensors", tiny_models.sd3("clip_l")),
                               ("t5xxl_fp16.safetensors", tiny_models.sd3("t5xxl"))]}
    for folder, names in links.items():
        target = eng.models(folder)
        os.makedirs(target, exist_ok=True)
        for name, source in names:
            os.symlink(source, os.path.join(target, name))
    return eng


def flux_prompt(model, clip, vae, guidance=3.5, steps=3, seed=11):
    return {
        "pos": {"class_type": "CLIPTextEncodeFlux", "inputs": {"clip": clip, "clip_l": "a lighthouse",
                                                               "t5xxl": "a lighthouse at dusk", "guidance": 3.5}},
        "fg": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": guidance}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": ["fg", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "flux"}},
    }


def separate_files_prompt(weight_dtype="default", **kwargs):
    """flux_prompt from the separate files: UNETLoader, DualCLIPLoader (type flux), VAELoader."""
    prompt = flux_prompt(["unet", 0], ["clips", 0], ["vae", 0], **kwargs)
    prompt["unet"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors",
                                                            "weight_dtype": weight_dtype}}
    prompt["clips"] = {"class_type": "DualCLIPLoader", "inputs": {
        "clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_fp16.safetensors", "type": "flux"}}
    prompt["vae"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}}
    return prompt


def checkpoint_prompt(name="flux1-dev-fp8.safetensors", **kwargs):
    prompt = flux_prompt(["ckpt", 0], ["ckpt", 1], ["ckpt", 2], **kwargs)
    prompt["ckpt"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}
    return prompt


def test_checkpoint_workflow_is_deterministic_and_guidance_matters(engine):
    first, _ = engine.run(checkpoint_prompt())
    assert first.status == "success", first.error
    pixels = image(engine, first)
    assert pixels.shape == (48, 64, 3) and pixels.std() > 0
    again, _ = engine.run(checkpoint_prompt())
    assert np.array_equal(image(engine, again), pixels)
    other, _ = engine.run(checkpoint_prompt(guidance=1.5))
    assert not np.array_equal(image(engine, other), pixels)


def test_separate_files_give_the_checkpoints_image(engine):
    bundled, _ = engine.run(checkpoint_prompt())
    separate, _ = engine.run(separate_files_prompt())
    assert separate.status == "success", separate.error
    assert np.array_equal(image(engine, separate), image(engine, bundled))


def test_schnell_runs_without_guidance(engine):
    outcome, _ = engine.run(checkpoint_prompt("flux1-schnell-fp8.safetensors", steps=2))
    assert outcome.status == "success", outcome.error
    other, _ = engine.run(checkpoint_prompt("flux1-schnell-fp8.safetensors", steps=2, guidance=1.0))
    assert np.array_equal(image(engine, other), image(engine, outcome))  # no guidance embedding to change


def test_one_euler_step_is_the_flow_formula_with_the_guidance(engine):
    from diffusion.sampling.ksampler import prepare_noise
    from model_management.checkpoints import load_checkpoint
    from safetensors.torch import load_file
    prompt = checkpoint_prompt(steps=1, guidance=2.5)
    prompt["show"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "l"}}
    del prompt["decode"], prompt["save"]
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    got = load_file(os.path.join(engine.services.paths.output_dir,
                                 outcome.outputs["show"]["latents"][0]["filename"]))["latent_tensor"]
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "flux1-dev-fp8.safetensors"))
    stack = loaded.clip.stack
    windows = {"clip_l": stack.tokenize("a lighthouse")["clip_l"], "t5xxl": stack.tokenize("a lighthouse at dusk")["t5xxl"]}
    cond, pooled = loaded.clip.encode_windows(windows)
    noise = prepare_noise(torch.zeros(1, 16, 6, 8), 11)
    with torch.no_grad():  # sigma_max of the dev schedule is 1: x = noise, t = 1
        v = loaded.model.unet(noise, torch.tensor([1.0]), cond, y=pooled, guidance=torch.tensor([2.5]))
    torch.testing.assert_close(got, (noise - v) / 0.3611 + 0.1159, rtol=1e-4, atol=1e-4)


def test_instruct_pix_to_pix_conditioning_feeds_a_canny_model(engine, tmp_path):
    """Flux Canny / Depth take the control image's latent as 16 extra channels (InstructPixToPixConditioning)."""
    from PIL import Image
    from safetensors.torch import save_file

    from diffusion.synthetic_flux import make_flux_checkpoint
    from model_management.checkpoints import load_checkpoint
    from nodes.inpaint import InstructPixToPixConditioning
    path = os.path.join(engine.models("checkpoints"), "flux1-canny-dev.safetensors")
    save_file(make_flux_checkpoint(extra_channels=16), path)
    vae = load_checkpoint(path, want_model=False, want_clip=False).vae
    pixels = torch.rand(1, 52, 70, 3)
    cond = [[torch.zeros(1, 4, 256), {"pooled_output": torch.zeros(1, 64)}]]
    positive, negative, latent = InstructPixToPixConditioning().run(None, cond, cond, vae, pixels)
    encoded = vae.encode(pixels)
    assert encoded.shape == (1, 16, 6, 8)  # centre-cropped to 48 x 64 first
    assert torch.equal(positive[0][1]["concat_latent_image"], encoded)
    assert torch.equal(negative[0][1]["concat_latent_image"], encoded) and "concat_mask" not in positive[0][1]
    assert torch.equal(latent["samples"], torch.zeros_like(encoded))
    Image.fromarray((pixels[0].numpy() * 255).astype("uint8")).save(os.path.join(engine.services.paths.input_dir,
                                                                                 "edges.png"))
    prompt = checkpoint_prompt("flux1-canny-dev.safetensors", steps=2)
    prompt["img"] = {"class_type": "LoadImage", "inputs": {"image": "edges.png"}}
    prompt["ip2p"] = {"class_type": "InstructPixToPixConditioning", "inputs": {
        "positive": ["fg", 0], "negative": ["neg", 0], "vae": ["ckpt", 2], "pixels": ["img", 0]}}
    prompt["sample"]["inputs"].update(positive=["ip2p", 0], negative=["ip2p", 1], latent_image=["ip2p", 2])
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert image(engine, outcome).shape == (48, 64, 3)


def test_fp8_weight_storage_stays_close_to_the_default(engine):
    """UNETLoader weight_dtype fp8_e4m3fn on a Flux transformer: weights kept in fp8, each layer cast as it runs."""
    images = {}
    for weight_dtype in ("default", "fp8_e4m3fn"):
        outcome, _ = engine.run(separate_files_prompt(weight_dtype))
        assert outcome.status == "success", outcome.error
        images[weight_dtype] = image(engine, outcome).astype(np.float64)
    mse = ((images["default"] - images["fp8_e4m3fn"]) ** 2).mean()
    psnr = 10 * np.log10(255 ** 2 / mse)
    print(f"fp8 storage vs default: {psnr:.1f} dB")
    assert 0 < mse and psnr > 35


def test_a_transformer_over_the_ram_budget_streams_from_its_file_with_the_same_image(engine, tiny_models):
    """--ram-budget smaller than the transformer: UNETLoader leaves it in its mapped file and streams its layers
    (model_management/host_streaming.py); the image is the one of the ordinary load."""
    from execution.caches import NoCache
    from execution.scheduler import Executor
    from model_management.host_streaming import host_stream_of
    from model_management.mapped_weights import stored_bytes
    from model_management.residency import ModelResidency

    images = []
    for budget in (1 << 40, stored_bytes(tiny_models.flux("diffusion_model")) // 2):
        engine.services.models = ModelResidency(ram_budget_bytes=budget)
        engine.executor = Executor(engine.catalogue, NoCache(), engine.services)
        outcome, _ = engine.run(separate_files_prompt())
        assert outcome.status == "success", outcome.error
        images.append(image(engine, outcome))
    streamed = [e for k, e in engine.services.models.entries.items() if k[0] == "unet"]
    assert streamed and host_stream_of(streamed[0].parts["unet"]).forwards > 0
    assert np.array_equal(images[0], images[1])
