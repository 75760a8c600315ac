"""Sampling end to end on tiny checkpoints: txt2img, img2img, SDXL base + refiner, seeds, progress, previews."""
import json
import os
import shutil

import pytest
import torch

from tests.nodes.test_model_nodes import ModelEngine

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "workflows")
REAL_NAMES = {"v1-5-pruned-emaonly.safetensors": ("sd1", {}), "sd_xl_base_1.0.safetensors": ("sdxl", {}),
              "sd_xl_refiner_1.0.safetensors": ("sdxl_refiner", {})}


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    for name, (family, variant) in REAL_NAMES.items():
        os.symlink(tiny_models.checkpoint(family, **variant), os.path.join(eng.models("checkpoints"), name))
    from PIL import Image
    Image.new("RGB", (64, 64), (200, 120, 40)).save(os.path.join(eng.services.paths.input_dir, "example.png"))
    return eng


def load(name, **overrides):
    with open(os.path.join(WORKFLOWS, f"{name}.api.json")) as f:
        prompt = json.load(f)
    for key, value in overrides.items():
        node, field = key.split("__")
        prompt[node]["inputs"][field] = value
    return prompt


def small(name):
    """The example workflows at a size the tiny models run in a second."""
    if name == "txt2img":
        return load(name, **{"5__width": 64, "5__height": 64, "3__steps": 6})
    if name == "img2img":
        return load(name, **{"3__steps": 6})
    if name == "hires_fix":
        return load(name, **{"5__width": 64, "5__height": 64, "3__steps": 4, "22__steps": 4})
    return load(name, **{"5__width": 64, "5__height": 64, "10__steps": 6, "10__end_at_step": 4, "11__steps": 6,
                         "11__start_at_step": 4})


def saved_image(engine, outcome, node):
    from PIL import Image
    info = outcome.outputs[node]["images"][0]
    path = os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"])
    return Image.open(path)


@pytest.mark.parametrize("name,save_node,size", [("txt2img", "9", (64, 64)), ("img2img", "9", (64, 64)),
                                                 ("hires_fix", "9", (96, 96)),
                                                 ("sdxl_base_refiner", "19", (64, 64))])
def test_example_workflows_run_on_tiny_models(engine, name, save_node, size):
    outcome, sink = engine.run(small(name))
    assert outcome.status == "success", outcome.error
    assert saved_image(engine, outcome, save_node).size == size
    assert sink.of("progress")


def test_same_seed_gives_a_bit_identical_image(engine):
    first, _ = engine.run(small("txt2img"))
    engine.executor.free()  # no cache: really sample again
    second, _ = engine.run(small("txt2img"))
    a, b = saved_image(engine, first, "9"), saved_image(engine, second, "9")
    assert a.tobytes() == b.tobytes()
    other = small("txt2img")
    other["3"]["inputs"]["seed"] = 43
    third, _ = engine.run(other)
    assert saved_image(engine, third, "9").tobytes() != a.tobytes()


def test_batch_index_image_does_not_depend_on_batch_size(engine):
    from nodes.sampling import common_ksampler
    from model_management.checkpoints import load_checkpoint
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "v1-5-pruned-emaonly.safetensors"))
    pos = [[loaded.clip.encode("a cat")[0], {}]]
    neg = [[loaded.clip.encode("")[0], {}]]
    one = common_ksampler(None, loaded.model, 11, 4, 5.0, "euler", "karras", pos, neg,
                          {"samples": torch.zeros(1, 4, 8, 8)})["samples"]
    three = common_ksampler(None, loaded.model, 11, 4, 5.0, "euler", "karras", pos, neg,
                            {"samples": torch.zeros(3, 4, 8, 8)})["samples"]
    assert torch.allclose(one[0], three[0], rtol=1e-4, atol=1e-3)  # batched convs may differ in the last bits


def test_progress_previews_and_interrupt(engine):
    prompt = small("txt2img")
    outcome, sink = engine.run(prompt)
    progress = [(p["value"], p["max"]) for p in sink.of("progress") if p["node"] == "3"]
    assert progress == [(i, 6) for i in range(1, 7)]
    assert not sink.previews  # no step previews unless the job asks (the server default is none)
    engine.executor.free()
    outcome, sink = engine.run(prompt, extra_data={"preview_method": "auto"})
    assert len([p for p in sink.previews if p[1] == "3"]) == 6  # a latent preview per step
    from execution.context import JobControl
    import threading
    import uuid
    from execution.events import RecordingSink
    from execution.scheduler import Job
    from graph.validation import validate_prompt
    long = small("txt2img")
    long["3"]["inputs"]["steps"] = 500
    long["3"]["inputs"]["seed"] = 99
    checked = validate_prompt(long, engine.catalogue, None, engine.services)
    control, sink = JobControl(), RecordingSink()

    def stop():
        import time
        while not [p for p in sink.of("progress") if p["node"] == "3"]:
            time.sleep(0.01)
        control.interrupt()
    watcher = threading.Thread(target=stop)
    watcher.start()
    outcome = engine.executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {},
                                               checked.order, control), sink)
    watcher.join()
    assert outcome.status == "interrupted"
    assert len([p for p in sink.of("progress") if p["node"] == "3"]) < 500


def test_ui_format_workflows_and_cli_runner(engine, tmp_path):
    import subprocess
    import sys
    root = os.path.dirname(WORKFLOWS)
    base = engine.services.paths.base_dir
    with open(os.path.join(WORKFLOWS, "txt2img.json")) as f:
        ui = json.load(f)
    for node in ui["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [64, 64]
        if node["type"] == "KSampler":
            node["widgets_values"][2] = 4  # steps (after seed and its control value)
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(ui))
    result = subprocess.run([sys.executable, "server.py", "--run", str(path), "--base-directory", base], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(printed) == 1 and os.path.isfile(printed[0])
    from PIL import Image
    embedded = Image.open(printed[0]).text
    assert json.loads(embedded["workflow"])["nodes"] and "KSampler" in embedded["prompt"]
    assert "#3 KSampler step 4/4" in result.stderr  # a plain progress line per step: stderr is a pipe


def test_custom_sampling_nodes(engine):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sched": {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "karras",
                                                            "steps": 6, "denoise": 1.0}},
        "split": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sched", 0], "step": 3}},
        "sampler": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}},
        "guider": {"class_type": "CFGGuider", "inputs": {"model": ["ckpt", 0], "positive": ["pos", 0],
                                                         "negative": ["neg", 0], "cfg": 6.0}},
        "first": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["noise", 0], "guider": ["guider", 0],
                                                                    "sampler": ["sampler", 0],
                                                                    "sigmas": ["split", 0],
                                                                    "latent_image": ["lat", 0]}},
        "off": {"class_type": "DisableNoise", "inputs": {}},
        "second": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["off", 0], "guider": ["guider", 0],
                                                                     "sampler": ["sampler", 0],
                                                                     "sigmas": ["split", 1],
                                                                     "latent_image": ["first", 0]}},
        "custom": {"class_type": "SamplerCustom", "inputs": {"model": ["ckpt", 0], "add_noise": True,
                                                             "noise_seed": 5, "cfg": 6.0, "positive": ["pos", 0],
                                                             "negative": ["neg", 0], "sampler": ["sampler", 0],
                                                             "sigmas": ["sched", 0], "latent_image": ["lat", 0]}},
        "o1": {"class_type": "PreviewAny", "inputs": {"source": ["second", 0]}},
        "o2": {"class_type": "PreviewAny", "inputs": {"source": ["custom", 1]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error


def test_split_schedule_with_euler_equals_the_whole_run(engine):
    from model_management.checkpoints import load_checkpoint
    from nodes.custom_sampling import (BasicScheduler, CFGGuider, DisableNoise, KSamplerSelect, RandomNoise,
                                       SamplerCustom, SamplerCustomAdvanced, SplitSigmas)
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "v1-5-pruned-emaonly.safetensors"))
    pos = [[loaded.clip.encode("a fox")[0], {}]]
    neg = [[loaded.clip.encode("")[0], {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    sigmas = BasicScheduler().run(None, loaded.model, "karras", 6, 1.0)[0]
    high, low = SplitSigmas().run(None, sigmas, 3)
    sampler = KSamplerSelect().run(None, "euler")[0]
    guider = CFGGuider().run(None, loaded.model, pos, neg, 6.0)[0]
    first = SamplerCustomAdvanced().run(None, RandomNoise().run(None, 5)[0], guider, sampler, high, latent)[0]
    second = SamplerCustomAdvanced().run(None, DisableNoise().run(None)[0], guider, sampler, low, first)[0]
    whole, denoised = SamplerCustom().run(None, loaded.model, True, 5, 6.0, pos, neg, sampler, sigmas, latent)
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5)
    assert torch.allclose(denoised["samples"], whole["samples"], atol=1e-5)  # last step lands on its denoised


def test_schedule_and_sigma_nodes():
    from nodes.custom_sampling import (ExponentialScheduler, FlipSigmas, KarrasScheduler, PolyexponentialScheduler,
                                       SplitSigmasDenoise)
    karras = KarrasScheduler().run(None, 10, 14.614642, 0.0291675, 7.0)[0]
    assert len(karras) == 11 and abs(float(karras[0]) - 14.614642) < 1e-4 and karras[-1] == 0
    expo = ExponentialScheduler().run(None, 5, 10.0, 0.1)[0]
    assert torch.allclose(expo[:-1].log().diff(), expo[:-1].log().diff()[0].expand(4), atol=1e-5)
    poly = PolyexponentialScheduler().run(None, 5, 10.0, 0.1, 1.0)[0]
    assert torch.allclose(poly, expo, atol=1e-5)  # rho 1 is exponential
    high, low = SplitSigmasDenoise().run(None, karras, 0.4)
    assert len(low) == 5 and high[-1] == low[0]
    flipped = FlipSigmas().run(None, karras)[0]
    assert flipped[0] == 0.0001 and flipped[-1] == karras[0]


def test_model_sampling_override_and_rescale_cfg_are_clones(engine):
    from model_management.checkpoints import load_checkpoint
    from nodes.model_patches import ModelSamplingDiscrete, RescaleCFG
    model = load_checkpoint(os.path.join(engine.models("checkpoints"), "v1-5-pruned-emaonly.safetensors")).model
    v = ModelSamplingDiscrete().run(None, model, "v_prediction", True)[0]
    assert v.prediction == "v" and model.prediction == "eps"
    assert v.model_sampling.sigma_max > 1000 and model.model_sampling.sigma_max < 15  # zero terminal SNR
    assert v.unet is model.unet  # weights shared, never copied
    rescaled = RescaleCFG().run(None, model, 0.7)[0]
    assert "cfg_combine" in rescaled.options and "cfg_combine" not in model.options


def test_latent_noise_mask_keeps_the_unmasked_region(engine):
    from model_management.checkpoints import load_checkpoint
    from nodes.sampling import SetLatentNoiseMask, common_ksampler
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "v1-5-pruned-emaonly.safetensors"))
    pos = [[loaded.clip.encode("a cat")[0], {}]]
    original = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0  # resample the right half only
    latent = SetLatentNoiseMask().run(None, {"samples": original}, mask)[0]
    out = common_ksampler(None, loaded.model, 3, 4, 1.0, "euler", "karras", pos, pos, latent)["samples"]
    assert torch.allclose(out[..., :3], original[..., :3], atol=1e-4)  # away from the mask's soft edge
    assert not torch.allclose(out[..., 5:], original[..., 5:], atol=1e-2)


@pytest.mark.parametrize("name", ["txt2img", "img2img", "sdxl_base_refiner", "hires_fix"])
def test_every_example_workflow_runs_through_the_cli(engine, tmp_path, name):
    import subprocess
    import sys
    path = tmp_path / f"{name}.api.json"
    path.write_text(json.dumps(small(name)))
    result = subprocess.run([sys.executable, "server.py", "--run", str(path), "--base-directory",
                             engine.services.paths.base_dir], cwd=os.path.dirname(WORKFLOWS), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.endswith(".png")]
