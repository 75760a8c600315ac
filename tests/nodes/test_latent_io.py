"""SaveLatent / LoadLatent through the engine: the file format, the prefix handling, the old scaled format, and
names that would leave the input folder."""
import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from graph.validation import validate_prompt
from tests.nodes.test_model_nodes import ModelEngine


@pytest.fixture
def engine(tmp_path):
    return ModelEngine(tmp_path)


def save_prompt(prefix="latents/run"):
    return {
        "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
        "m": {"class_type": "LatentMultiply", "inputs": {"samples": ["e", 0], "multiplier": 1.0}},
        "s": {"class_type": "SaveLatent", "inputs": {"samples": ["noisy", 0], "filename_prefix": prefix}},
        "noisy": {"class_type": "LatentAdd", "inputs": {"samples1": ["m", 0], "samples2": ["src", 0]}},
        "src": {"class_type": "LoadLatent", "inputs": {"latent": "seed.latent"}},
    }


def write_seed_latent(engine, tensor, marker=True, name="seed.latent"):
    data = {"latent_tensor": tensor}
    if marker:
        data["latent_format_version_0"] = torch.tensor([])
    path = os.path.join(engine.services.paths.input_dir, name)
    save_file(data, path)
    return path


def load_prompt(name):
    return {"l": {"class_type": "LoadLatent", "inputs": {"latent": name}},
            "show": {"class_type": "PreviewAny", "inputs": {"source": ["l", 0]}}}


def test_save_writes_a_marked_safetensors_file_and_load_reads_it_back(engine):
    values = torch.randn(2, 4, 6, 8)
    write_seed_latent(engine, values)
    outcome, _ = engine.run(save_prompt())
    assert outcome.status == "success", outcome.error
    entry, = outcome.outputs["s"]["latents"]
    assert entry == {"filename": "run_00001_.latent", "subfolder": "latents", "type": "output"}
    path = os.path.join(engine.services.paths.output_dir, "latents", entry["filename"])
    with safe_open(path, "pt") as f:
        assert sorted(f.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert torch.equal(f.get_tensor("latent_tensor"), values)  # zeros + values
        assert json.loads(f.metadata()["prompt"])["s"]["class_type"] == "SaveLatent"
    again, _ = engine.run(dict(save_prompt(), m={"class_type": "LatentMultiply",
                                                 "inputs": {"samples": ["e", 0], "multiplier": 2.0}}))
    assert again.outputs["s"]["latents"][0]["filename"] == "run_00002_.latent"

    shutil.copy(path, os.path.join(engine.services.paths.input_dir, "back.latent"))
    loaded, _ = engine.run({"l": {"class_type": "LoadLatent", "inputs": {"latent": "back.latent"}},
                            "s": {"class_type": "SaveLatent", "inputs": {"samples": ["l", 0],
                                                                         "filename_prefix": "copy"}}})
    with safe_open(os.path.join(engine.services.paths.output_dir, "copy_00001_.latent"), "pt") as f:
        assert torch.equal(f.get_tensor("latent_tensor"), values)


def test_old_files_without_the_marker_are_unscaled(engine):
    raw = torch.randn(1, 4, 4, 4)
    write_seed_latent(engine, raw * 0.18215, marker=False, name="old.latent")
    from nodes.latent_io import read_latent_file
    loaded = read_latent_file(os.path.join(engine.services.paths.input_dir, "old.latent"))
    assert torch.allclose(loaded, raw, atol=1e-6)


def test_the_combo_lists_latent_files_of_the_input_folder(engine):
    write_seed_latent(engine, torch.zeros(1, 4, 2, 2), name="b.latent")
    write_seed_latent(engine, torch.zeros(1, 4, 2, 2), name="a.latent")
    with open(os.path.join(engine.services.paths.input_dir, "picture.png"), "wb") as f:
        f.write(b"not a latent")
    info = engine.catalogue.object_info(engine.services, only="LoadLatent")
    assert info["LoadLatent"]["input"]["required"]["latent"][0] == ["a.latent", "b.latent"]
    outcome, _ = engine.run(load_prompt("a.latent"))
    assert outcome.status == "success", outcome.error


def test_unsafe_missing_and_pickled_files_are_refused(engine, tmp_path):
    outside = tmp_path / "outside.latent"
    save_file({"latent_tensor": torch.zeros(1, 4, 2, 2)}, str(outside))
    for name in ("../outside.latent", str(outside), "missing.latent"):
        checked = validate_prompt(load_prompt(name), engine.catalogue, None, engine.services)
        assert not checked.ok
        assert checked.node_errors["l"]["errors"][0]["extra_info"]["input_name"] == "latent"
    torch.save({"latent_tensor": torch.zeros(1)}, os.path.join(engine.services.paths.input_dir, "pickle.latent"))
    outcome, sink = engine.run(load_prompt("pickle.latent"))
    assert outcome.status == "error"
    assert "not a readable .latent (safetensors) file" in sink.of("execution_error")[0]["exception_message"]


def test_a_prefix_that_leaves_the_output_folder_is_refused(engine):
    write_seed_latent(engine, torch.zeros(2, 4, 6, 8))
    outcome, sink = engine.run(save_prompt(prefix="../../escape"))
    assert outcome.status == "error"
    assert "filename_prefix" in sink.of("execution_error")[0]["exception_message"]
