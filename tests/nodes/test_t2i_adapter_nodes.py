"""A T2I-adapter file through ControlNetLoader -> ControlNetApplyAdvanced -> KSampler on the tiny SD1 model."""
import os

import numpy as np
import pytest
import torch
from diffusers import T2IAdapter
from safetensors.torch import save_file

from diffusion.controlnet import t2i_adapter
from nodes.latent_io import read_latent_file
from tests.nodes.test_model_nodes import ModelEngine


def _adapter_file(path, channels, downscale_factor=8, adapter_type="full_adapter"):
    """A random-weight adapter in the original TencentARC layout (body.N, conv_in), as released files are."""
    torch.manual_seed(0)
    ref = T2IAdapter(in_channels=3, channels=channels, num_res_blocks=2, downscale_factor=downscale_factor,
                     adapter_type=adapter_type)
    sd = {}
    for key, value in ref.state_dict().items():
        parts = key.split(".")[1:]  # drop "adapter."
        if parts[0] == "body" and parts[2] == "resnets":
            key = f"body.{int(parts[1]) * 2 + int(parts[3])}." + ".".join(parts[4:])
        elif parts[0] == "body":  # the level's in_conv belongs to its first ResBlock
            key = f"body.{int(parts[1]) * 2}." + ".".join(parts[2:])
        else:
            key = ".".join(parts)
        sd[key] = (torch.randn_like(value) * 0.2).contiguous()
    save_file(sd, str(path))


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(eng.models("checkpoints"), "sd1.safetensors"))
    folder = eng.models("controlnet")
    _adapter_file(os.path.join(folder, "t2iadapter_canny_sd15.safetensors"), [32, 64, 64])
    _adapter_file(os.path.join(folder, "t2i-adapter-sdxl.safetensors"), [32, 64, 128, 128], 16, "full_adapter_xl")
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        os.path.join(eng.services.paths.input_dir, "edges.png"))
    return eng


def _prompt(adapter="t2iadapter_canny_sd15.safetensors", strength=1.0, prefix="t2i"):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "adapter": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": adapter}},
        "image": {"class_type": "LoadImage", "inputs": {"image": "edges.png"}},
        "apply": {"class_type": "ControlNetApplyAdvanced",
                  "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["adapter", 0],
                             "image": ["image", 0], "strength": strength, "start_percent": 0.0,
                             "end_percent": 1.0}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler",
                   "inputs": {"model": ["ckpt", 0], "seed": 7, "steps": 5, "cfg": 6.0, "sampler_name": "euler",
                              "scheduler": "normal", "positive": ["apply", 0], "negative": ["apply", 1],
                              "latent_image": ["latent", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": prefix}},
    }


def _latent(engine, outcome):
    info = outcome.outputs["save"]["latents"][0]
    return read_latent_file(os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"]))


def test_adapter_steers_sampling_and_runs_once_per_hint(engine, monkeypatch):
    calls = []
    original = t2i_adapter.FullAdapter.forward
    monkeypatch.setattr(t2i_adapter.FullAdapter, "forward", lambda self, x: calls.append(x.shape) or original(self, x))

    guided, _ = engine.run(_prompt(strength=1.0, prefix="full"))
    assert guided.status == "success", guided.error
    assert calls == [torch.Size([2, 3, 64, 64])]  # positive + negative in one batch, once for all 5 steps

    off, _ = engine.run(_prompt(strength=0.0, prefix="off"))
    half, _ = engine.run(_prompt(strength=0.5, prefix="half"))
    a, b, c = _latent(engine, guided), _latent(engine, off), _latent(engine, half)
    assert a.shape == b.shape == (1, 4, 8, 8)
    assert torch.isfinite(a).all()
    assert (a - b).abs().max() > 1e-2 and (a - c).abs().max() > 1e-3 and (c - b).abs().max() > 1e-3


def test_sdxl_adapter_on_an_sd1_model_fails_naming_the_input(engine):
    outcome, _ = engine.run(_prompt(adapter="t2i-adapter-sdxl.safetensors"))
    assert outcome.status != "success"
    assert "control_net" in str(outcome.error) and "sdxl" in str(outcome.error)
