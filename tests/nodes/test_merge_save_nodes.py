"""Merge and save nodes: declarations as in the reference catalogue, and whole workflows through the engine (load two
checkpoints, merge, save, load the result back and compare)."""
import json
import os
import uuid

import pytest
import torch

from execution.events import RecordingSink
from execution.scheduler import Job
from graph.validation import validate_prompt
from model_management import merging
from model_management.checkpoints import load_checkpoint, load_vae_file
from model_management.file_loading import load_state_dict, read_safetensors_metadata
from model_management.text_encoder_files import load_text_encoder_files
from nodes.model_merging import NODES
from tests.nodes.test_model_nodes import ModelEngine

from tests.reference import REFERENCE  # a copy of ../shared/nodes-reference.json
NAMES = ["ModelMergeSimple", "ModelMergeAdd", "ModelMergeSubtract", "ModelMergeBlocks", "CLIPMergeSimple",
         "CheckpointSave", "VAESave", "CLIPSave"]


def _without_docs(value):
    """A catalogue entry without tooltips (and the option dicts they leave empty)."""
    if isinstance(value, dict):
        return {k: _without_docs(v) for k, v in value.items() if k != "tooltip"}
    if isinstance(value, list):
        items = [_without_docs(v) for v in value]
        return [v for v in items if v != {}] if len(items) == 2 and items[1] == {} else items
    return value


def test_declarations_match_the_reference():
    with open(REFERENCE, encoding="utf-8") as f:
        reference = json.load(f)
    specs = {cls.SPEC.name: cls.SPEC for cls in NODES}
    assert sorted(specs) == sorted(NAMES)
    for name in NAMES:
        entry = specs[name].to_catalogue()
        for key in ("display_name", "category", "input", "input_order", "output", "output_name", "output_is_list",
                    "output_node"):
            assert _without_docs(entry[key]) == reference[name][key], (name, key)


class Engine(ModelEngine):
    def run(self, prompt, extra_data=None):
        checked = validate_prompt(prompt, self.catalogue, None, self.services)
        assert checked.ok, (checked.error, checked.node_errors)
        sink = RecordingSink()
        outcome = self.executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs,
                                                 extra_data or {}, checked.order), sink)
        return outcome, sink

    def output_file(self, entry):
        return os.path.join(self.services.paths.output_dir, entry["subfolder"], entry["filename"])


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = Engine(tmp_path)
    folder = eng.models("checkpoints")
    for name, path in (("a.safetensors", tiny_models.checkpoint("sd1")),
                       ("b.safetensors", tiny_models.checkpoint("sd1", seed=7)),
                       ("xl.safetensors", tiny_models.checkpoint("sdxl"))):
        os.symlink(path, os.path.join(folder, name))
    return eng


def loaders(b="b.safetensors"):
    return {"a": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
            "b": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": b}}}


def unet_out(model):
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, 64, generator=g)
    with torch.no_grad(), model.patched():
        return model.forward(x, torch.tensor([700.0]), ctx)


def test_merge_and_save_a_checkpoint_through_the_engine(engine, tiny_models):
    prompt = loaders()
    prompt.update({
        "blocks": {"class_type": "ModelMergeBlocks", "inputs": {"model1": ["a", 0], "model2": ["b", 0],
                                                                "input": 0.2, "middle": 0.5, "out": 0.7}},
        "diff": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["b", 0], "model2": ["a", 0],
                                                                "multiplier": 0.5}},
        "add": {"class_type": "ModelMergeAdd", "inputs": {"model1": ["blocks", 0], "model2": ["diff", 0]}},
        "simple": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["add", 0], "model2": ["a", 0],
                                                                "ratio": 0.8}},
        "clip": {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["a", 1], "clip2": ["b", 1], "ratio": 0.3}},
        "save": {"class_type": "CheckpointSave", "inputs": {"model": ["simple", 0], "clip": ["clip", 0],
                                                            "vae": ["b", 2], "filename_prefix": "checkpoints/mix"}},
    })
    workflow = {"nodes": [{"id": 1, "type": "CheckpointSave"}], "links": []}
    outcome, _ = engine.run(prompt, {"extra_pnginfo": {"workflow": workflow}})
    assert outcome.status == "success", outcome.error
    entry = outcome.outputs["save"]["files"][0]
    assert entry == {"filename": "mix_00001_.safetensors", "subfolder": "checkpoints", "type": "output"}
    path = engine.output_file(entry)
    meta = read_safetensors_metadata(path)
    assert json.loads(meta["workflow"]) == workflow
    assert json.loads(meta["prompt"])["save"]["inputs"]["filename_prefix"] == "checkpoints/mix"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1" and meta["modelspec.prediction_type"] == "epsilon"
    assert set(json.loads(meta["tessera.source"])) == {"a.safetensors", "b.safetensors"}

    # the same graph through the API, from independently loaded models
    a, b = load_checkpoint(tiny_models.checkpoint("sd1")), load_checkpoint(tiny_models.checkpoint("sd1", seed=7))
    w1, w2 = ({n: p.detach().clone() for n, p in m.model.unet.named_parameters()} for m in (a, b))
    model = merging.merge_simple(merging.merge_add(
        merging.merge_blocks(a.model, b.model, {"input": 0.2, "middle": 0.5, "out": 0.7}),
        merging.merge_subtract(b.model, a.model, 0.5)), a.model, 0.8)
    loaded = load_checkpoint(path)
    assert loaded.family.name == "sd1" and loaded.leftovers == []
    assert torch.allclose(unet_out(loaded.model), unet_out(model), atol=1e-5)
    saved = loaded.model.unet.get_parameter("middle_block.1.proj_in.weight")
    name = "middle_block.1.proj_in.weight"
    blend = 0.5 * w1[name] + 0.5 * w2[name] + 0.5 * (w2[name] - w1[name])
    assert torch.allclose(saved, 0.8 * blend + 0.2 * w1[name], atol=1e-5)
    clip = merging.merge_clip_simple(a.clip, b.clip, 0.3)
    assert torch.allclose(loaded.clip.encode("a cat")[0], clip.encode("a cat")[0], atol=1e-6)
    assert not torch.allclose(loaded.clip.encode("a cat")[0], a.clip.encode("a cat")[0])
    latent = torch.randn(1, 4, 8, 8)
    assert torch.allclose(loaded.vae.decode(latent), b.vae.decode(latent), atol=1e-6)

    # the loaded (cached, shared) weights were never changed, and the file is usable as a checkpoint
    fresh = load_checkpoint(tiny_models.checkpoint("sd1"))
    assert all(torch.equal(p, fresh.model.unet.get_parameter(n)) for n, p in a.model.unet.named_parameters())
    os.symlink(path, os.path.join(engine.models("checkpoints"), "mix.safetensors"))
    again = {"m": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mix.safetensors"}},
             "e": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["m", 1]}},
             "s": {"class_type": "PreviewAny", "inputs": {"source": ["e", 0]}}}
    outcome, _ = engine.run(again)
    assert outcome.status == "success", outcome.error


def test_a_merged_model_samples_and_restores(engine):
    from nodes.sampling import common_ksampler
    a, b = load_checkpoint(os.path.join(engine.models("checkpoints"), "a.safetensors")), \
        load_checkpoint(os.path.join(engine.models("checkpoints"), "b.safetensors"))
    before = {n: p.detach().clone() for n, p in a.model.unet.named_parameters()}
    cond = [[a.clip.encode("a cat")[0], {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    run = lambda m: common_ksampler(None, m, 3, 2, 1.0, "euler", "normal", cond, cond, latent)["samples"]  # noqa
    plain, merged = run(a.model), run(merging.merge_simple(a.model, b.model, 0.5))
    assert not torch.allclose(plain, merged)
    assert torch.equal(run(merging.merge_simple(a.model, b.model, 1.0)), plain)
    assert all(torch.equal(p, before[n]) for n, p in a.model.unet.named_parameters())


def test_family_mismatch_is_a_clear_node_error(engine):
    prompt = loaders("xl.safetensors")
    prompt["m"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["a", 0], "model2": ["b", 0],
                                                                "ratio": 0.5}}
    prompt["s"] = {"class_type": "CheckpointSave", "inputs": {"model": ["m", 0], "clip": ["a", 1],
                                                              "vae": ["a", 2], "filename_prefix": "checkpoints/x"}}
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    message = sink.of("execution_error")[0]["exception_message"]
    assert "SDXL" in message and "SD1.x" in message


def test_vae_and_clip_save_nodes(engine, tiny_models):
    prompt = loaders("xl.safetensors")
    prompt["v"] = {"class_type": "VAESave", "inputs": {"vae": ["a", 2], "filename_prefix": "vae/mine"}}
    prompt["c"] = {"class_type": "CLIPSave", "inputs": {"clip": ["b", 1], "filename_prefix": "clip/xl"}}
    outcome, _ = engine.run(prompt, {"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert outcome.status == "success", outcome.error
    (vae_entry,) = outcome.outputs["v"]["files"]
    assert vae_entry["filename"] == "mine_00001_.safetensors" and vae_entry["subfolder"] == "vae"
    vae_path = engine.output_file(vae_entry)
    assert "workflow" in read_safetensors_metadata(vae_path)
    a = load_checkpoint(tiny_models.checkpoint("sd1"))
    latent = torch.randn(1, 4, 8, 8)
    assert torch.allclose(load_vae_file(vae_path).decode(latent), a.vae.decode(latent), atol=1e-6)

    files = outcome.outputs["c"]["files"]
    assert [f["filename"] for f in files] == ["xl_clip_l_00001_.safetensors", "xl_clip_g_00001_.safetensors"]
    paths = [engine.output_file(f) for f in files]
    assert all(k.startswith(("text_model.", "text_projection.")) for p in paths for k in load_state_dict(p))
    reloaded = load_text_encoder_files(paths, "sdxl")
    xl = load_checkpoint(tiny_models.checkpoint("sdxl"), want_model=False, want_vae=False).clip
    got, exp = reloaded.encode("a castle"), xl.encode("a castle")
    assert torch.allclose(got[0], exp[0], atol=1e-6) and torch.allclose(got[1], exp[1], atol=1e-6)

    outcome, _ = engine.run({"a": prompt["a"], "v": {"class_type": "VAESave",
                                                     "inputs": {"vae": ["a", 2], "filename_prefix": "../escape"}}})
    assert outcome.status == "error"
