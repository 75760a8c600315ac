"""ControlNet nodes end to end on tiny real-layout checkpoints and ControlNet files in a real models/ folder."""
import json
import os

import numpy as np
import pytest
import torch

from model_management.synthetic_controlnets import make_controlnet, write_controlnet
from nodes.controlnet import ControlNetApply, ControlNetApplyAdvanced, ControlNetLoader, DiffControlNetLoader
from tests.nodes.test_model_nodes import ModelEngine

from tests.reference import REFERENCE  # a copy of ../shared/nodes-reference.json
NODES = [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced]


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    for family in ("sd1", "sdxl"):
        os.symlink(tiny_models.checkpoint(family), os.path.join(eng.models("checkpoints"), f"{family}.safetensors"))
    folder = eng.models("controlnet")
    write_controlnet(os.path.join(folder, "canny_sd1.safetensors"), "sd1", seed=1)
    write_controlnet(os.path.join(folder, "depth_sd1_diffusers.safetensors"), "sd1", layout="diffusers", seed=2)
    write_controlnet(os.path.join(folder, "canny_sdxl.safetensors"), "sdxl", seed=3)
    from PIL import Image
    square = np.zeros((48, 64, 3), np.uint8)
    square[12:36, 16:48] = 255
    Image.fromarray(square).save(os.path.join(eng.services.paths.input_dir, "square.png"))
    return eng


def _graph(controls=(), ckpt="sd1.safetensors"):
    """txt2img 64x48, 3 steps; `controls`: (file, strength, start, end) applied in order (stacked)."""
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a box", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "square.png"}},
        "edges": {"class_type": "Canny", "inputs": {"image": ["img", 0], "low_threshold": 0.4,
                                                     "high_threshold": 0.8}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
    }
    pos, neg = ["pos", 0], ["neg", 0]
    for i, (name, strength, start, end) in enumerate(controls):
        prompt[f"cn{i}"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
        prompt[f"apply{i}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": pos, "negative": neg, "control_net": [f"cn{i}", 0], "image": ["edges", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        pos, neg = [f"apply{i}", 0], [f"apply{i}", 1]
    prompt["ks"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": 7, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": pos, "negative": neg, "latent_image": ["lat", 0], "denoise": 1.0}}
    prompt["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "cn"}}
    return prompt


def _pixels(engine, prompt):
    from PIL import Image
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    info = outcome.outputs["save"]["images"][0]
    path = os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"])
    return np.asarray(Image.open(path)).astype(np.int16)


@pytest.mark.parametrize("cls", NODES, ids=lambda c: c.SPEC.name)
def test_interface_matches_the_reference(cls):
    with open(REFERENCE, encoding="utf-8") as f:
        ref = json.load(f)[cls.SPEC.name]
    entry = cls.SPEC.to_catalogue()
    for key in ("category", "input_order", "output", "output_name", "output_is_list", "output_node"):
        assert entry[key] == ref[key], key
    assert entry["display_name"] == (ref["display_name"] or cls.SPEC.name)
    assert entry["deprecated"] == ref.get("deprecated", False)
    for section, inputs in ref["input"].items():
        assert list(entry["input"][section]) == list(inputs)
        for name, expected in inputs.items():
            declared = next(i for i in cls.SPEC.inputs if i.name == name)
            got = entry["input"][section][name]
            head = "FILES:controlnet" if callable(declared.choices) else got[0]
            opts = {k: v for k, v in (got[1] if len(got) > 1 else {}).items()
                    if k != "tooltip" and not (callable(declared.choices) and k == "default")}
            assert ([head, opts] if opts else [head]) == expected, name
    assert len(cls.SPEC.description) > 20
    assert all(i.options.get("tooltip") for i in cls.SPEC.inputs) and all(o.tooltip for o in cls.SPEC.outputs)


def test_controlnet_files_are_listed(engine):
    info = engine.catalogue.object_info(engine.services, only="ControlNetLoader")
    assert info["ControlNetLoader"]["input"]["required"]["control_net_name"][0] == [
        "canny_sd1.safetensors", "canny_sdxl.safetensors", "depth_sd1_diffusers.safetensors"]


def test_controlnet_steers_txt2img_and_strength_zero_is_no_control(engine):
    plain = _pixels(engine, _graph())
    steered = _pixels(engine, _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    assert np.abs(steered - plain).max() > 0
    assert np.array_equal(_pixels(engine, _graph([("canny_sd1.safetensors", 0.0, 0.0, 1.0)])), plain)
    # stacked (one single-file, one diffusers-format) with a window on the second: runs and differs again
    stacked = _pixels(engine, _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0),
                                      ("depth_sd1_diffusers.safetensors", 0.8, 0.2, 0.7)]))
    assert np.abs(stacked - steered).max() > 0


def test_family_mismatch_is_a_clear_error(engine):
    outcome, sink = engine.run(_graph([("canny_sdxl.safetensors", 1.0, 0.0, 1.0)]))
    assert outcome.status == "error"
    message = sink.of("execution_error")[0]["exception_message"]
    assert "canny_sdxl.safetensors" in message and "sdxl" in message and "sd1" in message


def test_apply_nodes_stack_without_touching_their_inputs(engine):
    from model_management.control_files import control_model_from_state_dict
    net = control_model_from_state_dict(make_controlnet("sd1", seed=1))
    cond = [[torch.zeros(1, 4, 64), {"pooled_output": None}]]
    image = torch.rand(1, 16, 16, 3)
    (once,) = ControlNetApply().run(None, cond, net, image, 0.5)
    assert "control" not in cond[0][1] and once[0][1]["control"].strength == 0.5
    pos, neg = ControlNetApplyAdvanced().run(None, once, cond, net, image, 1.0, 0.1, 0.9)
    top = pos[0][1]["control"]
    assert top.previous is once[0][1]["control"] and (top.start_percent, top.end_percent) == (0.1, 0.9)
    assert neg[0][1]["control"].previous is None
    shared = ControlNetApplyAdvanced().run(None, cond, cond, net, image, 1.0, 0.0, 1.0)
    assert shared[0][0][1]["control"] is shared[1][0][1]["control"]  # positive and negative batch together
    with pytest.raises(ValueError, match="control_net"):
        ControlNetApplyAdvanced().run(None, cond, cond, "not a net", image, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="image"):
        ControlNetApply().run(None, cond, net, torch.rand(16, 16), 1.0)
    with pytest.raises(ValueError, match="start_percent"):
        ControlNetApplyAdvanced().run(None, cond, cond, net, image, 1.0, 0.8, 0.3)


def test_diff_controlnet_loader_through_the_engine(engine, tiny_models):
    from model_management.checkpoints import load_checkpoint
    base = load_checkpoint(tiny_models.checkpoint("sd1")).model.unet.state_dict()
    from safetensors.torch import save_file
    save_file(make_controlnet("sd1", seed=1, difference_from=base),
              os.path.join(engine.models("controlnet"), "canny_sd1_diff.safetensors"))
    prompt = _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)])
    full = _pixels(engine, prompt)
    prompt["cn0"] = {"class_type": "DiffControlNetLoader",
                     "inputs": {"model": ["ckpt", 0], "control_net_name": "canny_sd1_diff.safetensors"}}
    assert np.abs(_pixels(engine, prompt) - full).max() <= 1  # same network, up to float rounding of base+diff
    prompt["cn0"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny_sd1_diff.safetensors"}}
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    assert "DiffControlNetLoader" in sink.of("execution_error")[0]["exception_message"]


# -- owned by the model manager ------------------------------------------------------------------------------------

def _managed(engine, budget=None):
    """The same engine folders, run with a model manager and no output cache (only residency can avoid reads)."""
    from execution.caches import NoCache
    from execution.scheduler import Executor
    from model_management.residency import ModelResidency
    engine.services.models = ModelResidency(ram_budget_bytes=budget)
    engine.executor = Executor(engine.catalogue, NoCache(), engine.services)
    return engine.services.models


def test_two_workflows_sharing_a_controlnet_read_it_once(engine):
    plain = _pixels(engine, _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    models = _managed(engine)
    first = _pixels(engine, _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    second = _pixels(engine, _graph([("canny_sd1.safetensors", 0.7, 0.2, 1.0)]))
    assert models.file_reads == 2  # the checkpoint and the ControlNet, once each
    assert sorted(k[0] for k in models.entries) == ["checkpoint", "controlnet"]
    assert np.array_equal(first, plain) and not np.array_equal(second, first)


def test_an_evicted_controlnet_is_read_again_with_identical_output(engine):
    models = _managed(engine)
    prompt = _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)])
    before = _pixels(engine, prompt)
    key = next(k for k in models.entries if k[0] == "controlnet")
    models._drop(key)
    assert np.array_equal(_pixels(engine, prompt), before)
    assert models.file_reads == 3 and key in models.entries


def test_diff_controlnet_through_the_model_manager(engine, tiny_models):
    from model_management.checkpoints import load_checkpoint
    from safetensors.torch import save_file
    base = load_checkpoint(tiny_models.checkpoint("sd1")).model.unet.state_dict()
    save_file(make_controlnet("sd1", seed=1, difference_from=base),
              os.path.join(engine.models("controlnet"), "canny_sd1_diff.safetensors"))
    full = _pixels(engine, _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    models = _managed(engine)
    prompt = _graph([("canny_sd1.safetensors", 1.0, 0.0, 1.0)])
    prompt["cn0"] = {"class_type": "DiffControlNetLoader",
                     "inputs": {"model": ["ckpt", 0], "control_net_name": "canny_sd1_diff.safetensors"}}
    assert np.abs(_pixels(engine, prompt) - full).max() <= 1
    assert np.abs(_pixels(engine, prompt) - full).max() <= 1
    diff_keys = [k for k in models.entries if k[0] == "controlnet"]
    assert models.file_reads == 2 and len(diff_keys) == 1
    assert diff_keys[0][2][0][0] == "base"  # the base MODEL is part of the entry's identity
