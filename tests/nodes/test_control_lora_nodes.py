"""A control-LoRA file through ControlNetLoader -> ControlNetApplyAdvanced -> KSampler on the tiny SDXL model."""
import os

import numpy as np
import pytest
from safetensors.torch import save_file

from diffusion.controlnet import control_lora
from model_management.checkpoints import load_checkpoint
from nodes.latent_io import read_latent_file
from tests.diffusion.controlnet.test_control_lora import _make_pair
from tests.nodes.test_model_nodes import ModelEngine


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    ckpt = tiny_models.checkpoint("sdxl")
    os.symlink(ckpt, os.path.join(eng.models("checkpoints"), "sdxl.safetensors"))
    unet = load_checkpoint(ckpt, want_clip=False, want_vae=False).model.unet
    _, lora_sd = _make_pair(unet)
    save_file({k: v.contiguous() for k, v in lora_sd.items()},
              os.path.join(eng.models("controlnet"), "control-lora-canny-rank4.safetensors"))
    from PIL import Image
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        os.path.join(eng.services.paths.input_dir, "edges.png"))
    return eng


def _prompt(strength, prefix):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "cn": {"class_type": "ControlNetLoader",
               "inputs": {"control_net_name": "control-lora-canny-rank4.safetensors"}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "edges.png"}},
        "apply": {"class_type": "ControlNetApplyAdvanced",
                  "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0],
                             "image": ["image", 0], "strength": strength, "start_percent": 0.0,
                             "end_percent": 1.0}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["ckpt", 0], "seed": 3, "steps": 4, "cfg": 5.0, "sampler_name": "euler",
                              "scheduler": "normal", "positive": ["apply", 0], "negative": ["apply", 1],
                              "latent_image": ["latent", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}},
    }


def _latent(engine, outcome):
    info = outcome.outputs["save"]["latents"][0]
    return read_latent_file(os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"]))


def test_control_lora_is_built_from_the_model_once_and_steers_sampling(engine, monkeypatch):
    builds = []
    original = control_lora.merged_state_dict
    monkeypatch.setattr(control_lora, "merged_state_dict", lambda *a: builds.append(1) or original(*a))
    on, _ = engine.run(_prompt(1.0, "on"))
    assert on.status == "success", on.error
    assert builds == [1]  # built on the first step from the sampled MODEL, reused for the other three
    off, _ = engine.run(_prompt(0.0, "off"))
    assert off.status == "success", off.error
    a, b = _latent(engine, on), _latent(engine, off)
    assert a.shape == (1, 4, 8, 8) and (a - b).abs().max() > 1e-3
