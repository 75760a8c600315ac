"""Loader, text-encode and VAE nodes through the engine, on tiny checkpoints in a real models/ folder."""
import os
import uuid

import pytest
import torch
from safetensors.torch import load_file, save_file

from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from model_management.services import Services
from graph.validation import validate_prompt
from nodes import builtin_catalogue


class ModelEngine:
    def __init__(self, base):
        self.services = Services.for_directory(str(base))
        self.catalogue = builtin_catalogue()
        self.executor = Executor(self.catalogue, services=self.services)

    def models(self, kind):
        return self.services.paths.folder_paths(kind)[0]

    def run(self, prompt, extra_data=None):
        checked = validate_prompt(prompt, self.catalogue, None, self.services)
        assert checked.ok, (checked.error, checked.node_errors)
        sink = RecordingSink()
        outcome = self.executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs,
                                                 extra_data or {}, checked.order), sink)
        return outcome, sink


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    for family in ("sd1", "sdxl"):
        os.symlink(tiny_models.checkpoint(family), os.path.join(eng.models("checkpoints"), f"{family}.safetensors"))
    return eng


def txt2img_decode(ckpt="sd1.safetensors", text="a photo of a cat"):
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["ckpt", 1]}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["pos", 0]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 2}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["latent", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "t"}},
    }


def test_checkpoint_combo_lists_model_files(engine):
    info = engine.catalogue.object_info(engine.services, only="CheckpointLoaderSimple")
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["sd1.safetensors",
                                                                                    "sdxl.safetensors"]
    bad = txt2img_decode(ckpt="missing.safetensors")
    checked = validate_prompt(bad, engine.catalogue, None, engine.services)
    assert checked.node_errors["ckpt"]["errors"][0]["type"] == "value_not_in_list"


def test_load_encode_and_decode_through_the_engine(engine):
    outcome, _ = engine.run(txt2img_decode())
    assert outcome.status == "success", outcome.error
    images = outcome.outputs["save"]["images"]
    assert len(images) == 2
    assert all(os.path.isfile(os.path.join(engine.services.paths.output_dir, i["filename"])) for i in images)
    assert "list" in outcome.outputs["show"]["text"][0] or "[" in outcome.outputs["show"]["text"][0]


def test_img2img_encode_tiled_decode_and_clip_skip(engine):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "img": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 0x336699}},
        "enc": {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["ckpt", 2]}},
        "enc_t": {"class_type": "VAEEncodeTiled", "inputs": {"pixels": ["img", 0], "vae": ["ckpt", 2],
                                                             "tile_size": 64, "overlap": 32,
                                                             "temporal_size": 64, "temporal_overlap": 8}},
        "dec_t": {"class_type": "VAEDecodeTiled", "inputs": {"samples": ["enc", 0], "vae": ["ckpt", 2],
                                                             "tile_size": 64, "overlap": 32,
                                                             "temporal_size": 64, "temporal_overlap": 8}},
        "skip": {"class_type": "CLIPSetLastLayer", "inputs": {"clip": ["ckpt", 1], "stop_at_clip_layer": -2}},
        "cond": {"class_type": "CLIPTextEncode", "inputs": {"text": "(red:1.5) [blue]", "clip": ["skip", 0]}},
        "o1": {"class_type": "PreviewAny", "inputs": {"source": ["dec_t", 0]}},
        "o2": {"class_type": "PreviewAny", "inputs": {"source": ["enc_t", 0]}},
        "o3": {"class_type": "PreviewAny", "inputs": {"source": ["cond", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["o1"]["text"][0].startswith("Tensor of shape [1, 64, 96, 3]")
    assert '"samples"' in outcome.outputs["o2"]["text"][0]
    assert any(p["node"] == "dec_t" for p in sink.of("progress"))  # tiles report progress


def test_sdxl_prompts_and_embeddings(engine, tiny_models):
    emb_dir = engine.models("embeddings")
    save_file({"clip_l": torch.randn(2, 64), "clip_g": torch.randn(2, 64)}, os.path.join(emb_dir, "style.safetensors"))
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "enc": {"class_type": "CLIPTextEncodeSDXL", "inputs": {
            "clip": ["ckpt", 1], "width": 1024, "height": 768, "crop_w": 0, "crop_h": 0, "target_width": 1024,
            "target_height": 768, "text_g": "a castle, embedding:style", "text_l": "a castle " * 40}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["enc", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    missing = dict(prompt)
    missing["enc"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "embedding:nope", "clip": ["ckpt", 1]}}
    outcome, sink = engine.run(missing)
    assert outcome.status == "success"  # a missing embedding is a warning, as in the reference
    assert any("nope" in event["text"] for event in sink.of("progress_text"))


def test_conditioning_output_shapes(engine):
    from nodes.text_encode import CLIPTextEncodeSDXL
    from model_management.checkpoints import load_checkpoint
    clip = load_checkpoint(os.path.join(engine.models("checkpoints"), "sdxl.safetensors"), want_model=False,
                           want_vae=False).clip
    cond = CLIPTextEncodeSDXL().run(None, clip, 1024, 768, 0, 0, 1024, 768, "short", "a castle " * 40)[0]
    tensor, options = cond[0]
    assert tensor.shape == (1, 154, 128)  # text_l needs two windows; text_g is padded to match
    assert options["pooled_output"].shape == (1, 32) and options["height"] == 768


def test_config_loader_and_standalone_loaders(engine, tiny_models):
    configs = engine.models("configs")
    with open(os.path.join(configs, "v-inference.yaml"), "w") as f:
        f.write("model:\n  params:\n    parameterization: \"v\"\n")
    state = load_file(tiny_models.checkpoint("sd1"))
    save_file({k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")},
              os.path.join(engine.models("vae"), "better.safetensors"))
    save_file({k[len("model.diffusion_model."):]: v for k, v in state.items()
               if k.startswith("model.diffusion_model.")}, os.path.join(engine.models("unet"), "u.safetensors"))
    save_file({k[len("cond_stage_model.transformer."):]: v for k, v in state.items()
               if k.startswith("cond_stage_model.transformer.")}, os.path.join(engine.models("clip"), "l.safetensors"))
    prompt = {
        "cfg": {"class_type": "CheckpointLoader", "inputs": {"config_name": "v-inference.yaml",
                                                             "ckpt_name": "sd1.safetensors"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "better.safetensors"}},
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors", "weight_dtype": "default"}},
        "clip": {"class_type": "CLIPLoader", "inputs": {"clip_name": "l.safetensors", "type": "stable_diffusion"}},
        "enc": {"class_type": "CLIPTextEncode", "inputs": {"text": "hi", "clip": ["clip", 0]}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["lat", 0], "vae": ["vae", 0]}},
        "o1": {"class_type": "PreviewAny", "inputs": {"source": ["dec", 0]}},
        "o2": {"class_type": "PreviewAny", "inputs": {"source": ["enc", 0]}},
        "o3": {"class_type": "PreviewAny", "inputs": {"source": ["unet", 0]}},
        "o4": {"class_type": "PreviewAny", "inputs": {"source": ["cfg", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    model = engine.executor.cache  # the MODEL objects live in the output cache: check the v override took
    models = [v for e in model.entries.values() for slot in e.values for v in slot
              if type(v).__name__ == "DiffusionModel"]
    assert {m.prediction for m in models} == {"v", "eps"}


def test_missing_embedding_warns_on_the_node_and_the_prompt_goes_on(engine, caplog):
    prompt = txt2img_decode(text="a photo of embedding:not_there cat")
    with caplog.at_level("WARNING"):
        outcome, sink = engine.run(prompt)
    assert outcome.status == "success", sink.of("execution_error")
    texts = [event for event in sink.of("progress_text") if event["node"] == "pos"]
    assert len(texts) == 1 and "not_there" in texts[0]["text"] and "left out" in texts[0]["text"]
    assert any("not_there" in record.getMessage() for record in caplog.records)
    plain, _ = engine.run(txt2img_decode(text="a photo of cat"))
    assert plain.status == "success"
