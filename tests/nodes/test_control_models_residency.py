"""T2I-adapters and control-LoRAs owned by the model manager: read once, evictable, the same result after a reload."""
import os

import numpy as np
import torch
from safetensors.torch import save_file

from execution.caches import NoCache
from execution.scheduler import Executor
from model_management.checkpoints import load_checkpoint
from model_management.residency import ModelResidency
from tests.diffusion.controlnet.test_control_lora import _make_pair
from tests.nodes import test_control_lora_nodes as lora_nodes
from tests.nodes import test_t2i_adapter_nodes as t2i_nodes
from tests.nodes.test_model_nodes import ModelEngine


def _engine(tmp_path, tiny_models, family):
    eng = ModelEngine(tmp_path)
    ckpt = tiny_models.checkpoint(family)
    os.symlink(ckpt, os.path.join(eng.models("checkpoints"), f"{family}.safetensors"))
    folder = eng.models("controlnet")
    if family == "sd1":
        t2i_nodes._adapter_file(os.path.join(folder, "t2iadapter_canny_sd15.safetensors"), [32, 64, 64])
    else:
        unet = load_checkpoint(ckpt, want_clip=False, want_vae=False).model.unet
        _, lora_sd = _make_pair(unet)
        save_file({k: v.contiguous() for k, v in lora_sd.items()},
                  os.path.join(folder, "control-lora-canny-rank4.safetensors"))
    from PIL import Image
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        os.path.join(eng.services.paths.input_dir, "edges.png"))
    return eng


def _managed(engine):
    engine.services.models = ModelResidency()
    engine.executor = Executor(engine.catalogue, NoCache(), engine.services)
    return engine.services.models


def _check(engine, prompt, latent, kind_prefix):
    plain, _ = engine.run(prompt("plain"))
    assert plain.status == "success", plain.error
    expected = latent(engine, plain)
    models = _managed(engine)
    results = []
    for run in range(3):
        outcome, _ = engine.run(prompt(f"managed{run}"))
        assert outcome.status == "success", outcome.error
        results.append(latent(engine, outcome))
        if run == 1:  # evict the control file: the next workflow reads it again behind its handle
            models._drop(next(k for k in models.entries if k[0] == "controlnet"))
    assert models.file_reads == 3  # the checkpoint once; the control file once, and once after its eviction
    assert all(torch.equal(r, expected) for r in results)
    (entry,) = [e for k, e in models.entries.items() if k[0] == "controlnet"]
    assert entry.bytes > 0 and type(entry.parts["control"]).__name__.startswith(kind_prefix)


def test_t2i_adapter_through_the_model_manager(tmp_path, tiny_models):
    engine = _engine(tmp_path, tiny_models, "sd1")
    _check(engine, lambda prefix: t2i_nodes._prompt(prefix=prefix), t2i_nodes._latent, "T2IAdapter")


def test_control_lora_through_the_model_manager(tmp_path, tiny_models):
    engine = _engine(tmp_path, tiny_models, "sdxl")
    _check(engine, lambda prefix: lora_nodes._prompt(1.0, prefix), lora_nodes._latent, "ControlLora")
