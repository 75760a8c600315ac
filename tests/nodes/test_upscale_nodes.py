"""UpscaleModelLoader and ImageUpscaleWithModel: the reference interface, and graphs run through the engine."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from graph.validation import validate_prompt
from model_management.upscaling import load_upscale_model
from nodes.upscale import NODES
from tests.model_management.upscale_fixtures import (compact_state_dict, realesrgan_state_dict,
                                                     write_malicious_pickle, write_pth, write_safetensors)
from tests.nodes.test_model_nodes import ModelEngine

from tests.reference import REFERENCE
NAMES = ["UpscaleModelLoader", "ImageUpscaleWithModel"]


def _without_docs(value):
    if isinstance(value, dict):
        return {k: _without_docs(v) for k, v in value.items() if k != "tooltip"}
    if isinstance(value, list):
        items = [_without_docs(v) for v in value]
        return [v for v in items if v != {}] if len(items) == 2 and items[1] == {} else items
    return value


def _reference_input(spec):
    """The reference writes a model-folder combo as ["COMBO", {"options": "FILES:<folder>"}] or ["FILES:<folder>"]."""
    if isinstance(spec, list) and spec and spec[0] == "COMBO" and str(spec[1].get("options", "")).startswith("FILES:"):
        return [spec[1]["options"]]
    return spec


def test_declarations_match_the_reference(tmp_path):
    with open(REFERENCE, encoding="utf-8") as f:
        reference = json.load(f)
    specs = {cls.SPEC.name: cls.SPEC for cls in NODES}
    assert sorted(specs) == sorted(NAMES)
    for name in NAMES:
        entry = specs[name].to_catalogue()
        expected = reference[name]
        for key in ("display_name", "category", "input_order", "output", "output_name", "output_is_list",
                    "output_node"):
            assert _without_docs(entry[key]) == expected[key], (name, key)
        for section, inputs in expected["input"].items():
            assert list(entry["input"][section]) == list(inputs), name
            for input_name, spec in inputs.items():
                ours = _without_docs(entry["input"][section][input_name])
                theirs = _reference_input(spec)
                if theirs[0].startswith("FILES:"):  # a combo of that folder's files
                    assert isinstance(ours[0], list), (name, input_name)
                    assert entry["input"][section][input_name][1]["tooltip"]
                else:
                    assert ours == theirs, (name, input_name)
        assert entry["description"]
        assert all(options.get("tooltip") for section in entry["input"].values()
                   for _type, options in section.values())
        assert all(entry["output_tooltips"]), name


@pytest.fixture
def engine(tmp_path):
    eng = ModelEngine(tmp_path)
    folder = eng.models("upscale_models")
    write_safetensors(compact_state_dict(), os.path.join(folder, "2x_compact.safetensors"))
    write_pth(realesrgan_state_dict(), os.path.join(folder, "RealESRGAN_x4plus_tiny.pth"))
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(20, 26, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(eng.services.paths.input_dir, "photo.png"))
    return eng


def upscale_graph(model_name="2x_compact.safetensors", image="photo.png"):
    return {
        "load": {"class_type": "LoadImage", "inputs": {"image": image}},
        "model": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "up": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["model", 0], "image": ["load", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["up", 0], "filename_prefix": "up"}},
    }


def saved(engine, outcome):
    entry = outcome.outputs["save"]["images"][0]
    with Image.open(os.path.join(engine.services.paths.output_dir, entry["subfolder"], entry["filename"])) as img:
        return np.array(img.convert("RGB"))


def expected_pixels(engine, model_file):
    """spandrel's own untiled call on the input image, stored the way SaveImage stores floats."""
    model = load_upscale_model(os.path.join(engine.models("upscale_models"), model_file))
    with Image.open(os.path.join(engine.services.paths.input_dir, "photo.png")) as img:
        x = torch.from_numpy(np.array(img.convert("RGB"))).float().div(255).permute(2, 0, 1)[None]
    out = model.descriptor(x)[0].permute(1, 2, 0).numpy()
    return np.clip(255.0 * out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("model_file,scale", [("2x_compact.safetensors", 2), ("RealESRGAN_x4plus_tiny.pth", 4)])
def test_load_upscale_and_save_through_the_engine(engine, model_file, scale):
    outcome, sink = engine.run(upscale_graph(model_file))
    assert outcome.status == "success", outcome.error
    pixels = saved(engine, outcome)
    assert pixels.shape == (20 * scale, 26 * scale, 3)
    difference = np.abs(pixels.astype(int) - expected_pixels(engine, model_file).astype(int))
    assert difference.max() <= 1
    progress = [d for d in sink.of("progress") if d["node"] == "up"]
    assert progress and progress[-1]["value"] == progress[-1]["max"]


def test_model_combo_lists_the_folder(engine):
    info = engine.catalogue.object_info(engine.services, only="UpscaleModelLoader")
    choices = info["UpscaleModelLoader"]["input"]["required"]["model_name"][0]
    assert choices == ["2x_compact.safetensors", "RealESRGAN_x4plus_tiny.pth"]
    checked = validate_prompt(upscale_graph("missing.pth"), engine.catalogue, None, engine.services)
    assert checked.node_errors["model"]["errors"][0]["type"] == "value_not_in_list"


def test_malicious_model_file_fails_the_job_without_running_code(engine, tmp_path):
    marker = tmp_path / "pwned"
    write_malicious_pickle(os.path.join(engine.models("upscale_models"), "evil.pth"), str(marker),
                           realesrgan_state_dict())
    outcome, sink = engine.run(upscale_graph("evil.pth"))
    assert outcome.status == "error"
    error = sink.of("execution_error")[0]
    assert error["node_type"] == "UpscaleModelLoader"
    assert "evil.pth" in error["exception_message"] and "refused" in error["exception_message"]
    assert not marker.exists()


def test_not_an_upscale_model_names_the_file(engine):
    write_safetensors({"foo.weight": torch.zeros(2, 2)},
                      os.path.join(engine.models("upscale_models"), "notes.safetensors"))
    outcome, sink = engine.run(upscale_graph("notes.safetensors"))
    assert outcome.status == "error"
    assert "notes.safetensors" in sink.of("execution_error")[0]["exception_message"]


def test_loaded_model_is_cached_until_the_file_changes(engine):
    first, _ = engine.run(upscale_graph())
    assert first.status == "success"
    again, _ = engine.run(upscale_graph())
    assert "model" in again.cached and "up" in again.cached
    path = os.path.join(engine.models("upscale_models"), "2x_compact.safetensors")
    write_safetensors(compact_state_dict(seed=9), path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10 ** 9))
    changed, _ = engine.run(upscale_graph())
    assert changed.status == "success"
    assert "model" in changed.executed and "up" in changed.executed
    assert not np.array_equal(saved(engine, changed), saved(engine, first))


# -- the example workflow -------------------------------------------------------------------------------------------

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows")


def test_hires_fix_workflow_with_model_upscale(tmp_path, tiny_models):
    from graph.ui_format import ui_to_api
    eng = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(eng.models("checkpoints"),
                                                           "v1-5-pruned-emaonly.safetensors"))
    write_pth(realesrgan_state_dict(), os.path.join(eng.models("upscale_models"), "RealESRGAN_x4plus.pth"))
    with open(os.path.join(WORKFLOWS, "hires_fix_model_upscale.api.json")) as f:
        prompt = json.load(f)
    with open(os.path.join(WORKFLOWS, "hires_fix_model_upscale.json")) as f:
        assert ui_to_api(json.load(f), eng.catalogue, eng.services) == prompt  # the UI twin is the same graph
    prompt["5"]["inputs"].update(width=48, height=40)
    prompt["3"]["inputs"]["steps"] = 3
    prompt["22"]["inputs"]["steps"] = 3
    outcome, sink = eng.run(prompt)
    assert outcome.status == "success", outcome.error
    entry = outcome.outputs["9"]["images"][0]
    with Image.open(os.path.join(eng.services.paths.output_dir, entry["subfolder"], entry["filename"])) as img:
        assert img.size == (96, 80)  # 4x by the model, then halved: twice the first pass
    assert {"30", "31", "20", "22"} <= set(outcome.executed)


# -- owned by the model manager ------------------------------------------------------------------------------------

def _managed(engine, budget=None, devices=None):
    """The engine with a model manager and no output cache (only residency can avoid reading a file again)."""
    from execution.caches import NoCache
    from execution.scheduler import Executor
    from model_management.residency import ModelResidency
    engine.services.models = ModelResidency(ram_budget_bytes=budget, devices=devices)
    engine.executor = Executor(engine.catalogue, NoCache(), engine.services)
    return engine.services.models


def test_workflows_sharing_an_upscale_model_read_it_once(engine):
    models = _managed(engine)
    outcomes = [engine.run(upscale_graph())[0] for _ in range(2)]
    assert all(o.status == "success" for o in outcomes) and "model" in outcomes[1].executed
    assert models.file_reads == 1 and models.resident_bytes() > 0
    assert np.abs(saved(engine, outcomes[1]).astype(int)
                  - expected_pixels(engine, "2x_compact.safetensors").astype(int)).max() <= 1


def test_upscale_models_are_evicted_least_recently_used_and_reload_identically(engine):
    probe = _managed(engine)
    for name in ("2x_compact.safetensors", "RealESRGAN_x4plus_tiny.pth"):
        assert engine.run(upscale_graph(name))[0].status == "success"
    budget = max(entry.bytes for entry in probe.entries.values()) + 1  # one model at a time
    models = _managed(engine, budget=budget)
    first, _ = engine.run(upscale_graph("2x_compact.safetensors"))
    other, _ = engine.run(upscale_graph("RealESRGAN_x4plus_tiny.pth"))
    assert other.status == "success" and len(models.entries) == 1 and models.resident_bytes() <= budget
    again, _ = engine.run(upscale_graph("2x_compact.safetensors"))
    assert models.file_reads == 3
    assert np.array_equal(saved(engine, again), saved(engine, first))


def test_the_upscale_runs_through_the_device_loader(engine):
    from model_management.device_loading import LOADED, DeviceLoader
    from model_management.devices import ComputeDevice
    from model_management.residency import module_bytes
    loader = DeviceLoader(ComputeDevice.simulated(1 << 30))
    models = _managed(engine, devices=loader)
    outcome, _ = engine.run(upscale_graph())
    assert outcome.status == "success", outcome.error
    (key,) = models.entries
    network = models.entries[key].parts["module"]
    rec = loader.record(network)
    assert rec is not None and rec.bytes_in(LOADED) == module_bytes(network) > 0  # in the VRAM ledger
    assert rec.in_use == 0  # placed for the upscale, evictable after it
    assert np.abs(saved(engine, outcome).astype(int)
                  - expected_pixels(engine, "2x_compact.safetensors").astype(int)).max() <= 1
    models.unload_all()
    assert loader.held_bytes() == 0
