"""comfy.controlnet's classes with ComfyUI's protocol, through the sampler: a pack's loader and subclasses.

A test-written pack (in tmp_path) loads control files with `comfy.controlnet.load_controlnet` and subclasses
`comfy.controlnet.ControlNet` the way Advanced-ControlNet does; the images are compared with the engine's own
ControlNet path on the same files.
"""
import os
import textwrap
import uuid

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from compat.packs import load_packs
from diffusion.controlnet.control_protocol import from_comfy, to_comfy
from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from model_management.checkpoints import load_checkpoint
from model_management.services import Services
from model_management.synthetic_controlnets import write_controlnet
from nodes import builtin_catalogue
from tests.diffusion.controlnet.test_control_lora import _make_pair
from tests.nodes.test_t2i_adapter_nodes import _adapter_file

PACK = '''
import comfy.controlnet
import folder_paths

CALLS = {"pre_run": 0, "cleanup": 0, "get_control": 0}


class Doubling(comfy.controlnet.ControlNet):
    """Counts the protocol calls and doubles every residual of its own (not of the controls below)."""

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        CALLS["get_control"] += 1
        assert transformer_options["cond_or_uncond"] and "sample_sigmas" in transformer_options
        below, self.previous_controlnet = self.previous_controlnet, None
        try:
            mine = super().get_control(x_noisy, t, cond, batched_number, transformer_options)
        finally:
            self.previous_controlnet = below
        if mine is not None:
            mine = {k: [None if r is None else r * 2 for r in v] for k, v in mine.items()}
        if below is None:
            return mine
        prev = below.get_control(x_noisy, t, cond, batched_number, transformer_options)
        return self.control_merge({}, prev, None) if mine is None else \\
            {k: [a if b is None else b if a is None else a + b for a, b in zip(mine[k], prev[k])]
             if prev.get(k) else mine[k] for k in mine}

    def pre_run(self, model, percent_to_timestep_function):
        CALLS["pre_run"] += 1
        super().pre_run(model, percent_to_timestep_function)

    def cleanup(self):
        CALLS["cleanup"] += 1
        super().cleanup()

    def copy(self):
        c = Doubling(self.control_model, load_device=self.load_device)
        self.copy_to(c)
        return c


class ComfyControlNetLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"control_net_name": (folder_paths.get_filename_list("controlnet"),),
                             "doubling": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("CONTROL_NET",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self, control_net_name, doubling):
        control = comfy.controlnet.load_controlnet(folder_paths.get_full_path("controlnet", control_net_name))
        if doubling:
            assert type(control) is comfy.controlnet.ControlNet
            twin = Doubling(control.control_model, load_device=control.load_device)
            control.copy_to(twin)
            control = twin
        return (control,)


NODE_CLASS_MAPPINGS = {"ComfyControlNetLoader": ComfyControlNetLoader}
'''


class Engine:
    def __init__(self, base, packs_dir):
        self.services = Services.for_directory(str(base))
        self.catalogue = builtin_catalogue()
        self.results = load_packs([str(packs_dir)], self.catalogue, self.services)
        self.executor = Executor(self.catalogue, services=self.services)

    def models(self, kind):
        return self.services.paths.folder_paths(kind)[0]

    def pixels(self, prompt):
        from PIL import Image
        checked = validate_prompt(prompt, self.catalogue, None, self.services)
        assert checked.ok, (checked.error, checked.node_errors)
        outcome = self.executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {},
                                                 checked.order), RecordingSink())
        assert outcome.status == "success", outcome.error
        info = outcome.outputs["save"]["images"][0]
        path = os.path.join(self.services.paths.output_dir, info["subfolder"], info["filename"])
        return np.asarray(Image.open(path)).astype(np.int16)


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("comfy_cn")
    packs = base / "packs" / "cn_pack"
    packs.mkdir(parents=True)
    (packs / "__init__.py").write_text(textwrap.dedent(PACK))
    eng = Engine(base / "home", base / "packs")
    assert all(r.ok for r in eng.results), [r.error for r in eng.results]
    for family in ("sd1", "sdxl"):
        os.symlink(tiny_models.checkpoint(family), os.path.join(eng.models("checkpoints"), f"{family}.safetensors"))
    folder = eng.models("controlnet")
    write_controlnet(os.path.join(folder, "canny_sd1.safetensors"), "sd1", seed=1)
    write_controlnet(os.path.join(folder, "depth_sd1.safetensors"), "sd1", seed=2)
    _adapter_file(os.path.join(folder, "t2i_sd1.safetensors"), [32, 64, 64])
    unet = load_checkpoint(tiny_models.checkpoint("sdxl"), want_clip=False, want_vae=False).model.unet
    _, lora_sd = _make_pair(unet)
    save_file({k: v.contiguous() for k, v in lora_sd.items()}, os.path.join(folder, "control-lora.safetensors"))
    from PIL import Image
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
        os.path.join(eng.services.paths.input_dir, "hint.png"))
    return eng


def _graph(controls=(), ckpt="sd1.safetensors", old_apply=False):
    """txt2img 64x64, 3 steps; `controls`: (loader, file, strength, start, end[, doubling]) stacked in order.
    loader "engine" = ControlNetLoader, "comfy" = the pack's comfy.controlnet loader."""
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a box", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    pos, neg = ["pos", 0], ["neg", 0]
    for i, (loader, name, strength, start, end, *doubling) in enumerate(controls):
        if loader == "engine":
            prompt[f"cn{i}"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": name}}
        else:
            prompt[f"cn{i}"] = {"class_type": "ComfyControlNetLoader",
                                "inputs": {"control_net_name": name, "doubling": bool(doubling and doubling[0])}}
        if old_apply:
            prompt[f"apply{i}"] = {"class_type": "ControlNetApply", "inputs": {
                "conditioning": pos, "control_net": [f"cn{i}", 0], "image": ["img", 0], "strength": strength}}
            pos = [f"apply{i}", 0]
            continue
        prompt[f"apply{i}"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": pos, "negative": neg, "control_net": [f"cn{i}", 0], "image": ["img", 0],
            "strength": strength, "start_percent": start, "end_percent": end}}
        pos, neg = [f"apply{i}", 0], [f"apply{i}", 1]
    prompt["ks"] = {"class_type": "KSampler", "inputs": {
        "model": ["ckpt", 0], "seed": 5, "steps": 3, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": pos, "negative": neg, "latent_image": ["lat", 0], "denoise": 1.0}}
    prompt["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}}
    prompt["save"] = {"class_type": "SaveImage", "inputs": {"images": ["dec", 0], "filename_prefix": "cn"}}
    return prompt


def _close(a, b, tol=1):
    return np.abs(a - b).max() <= tol


def test_the_comfy_loader_gives_the_engine_image(engine):
    plain = engine.pixels(_graph())
    ours = engine.pixels(_graph([("engine", "canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    theirs = engine.pixels(_graph([("comfy", "canny_sd1.safetensors", 1.0, 0.0, 1.0)]))
    assert np.abs(ours - plain).max() > 8  # the ControlNet does steer
    assert _close(theirs, ours)
    windowed = [("engine", "canny_sd1.safetensors", 0.7, 0.0, 0.5)]
    assert _close(engine.pixels(_graph([("comfy",) + windowed[0][1:]])), engine.pixels(_graph(windowed)))


def test_t2i_adapter_and_control_lora_through_the_comfy_classes(engine):
    t2i = [("engine", "t2i_sd1.safetensors", 1.0, 0.0, 1.0)]
    ours = engine.pixels(_graph(t2i))
    assert np.abs(ours - engine.pixels(_graph())).max() > 8
    assert _close(engine.pixels(_graph([("comfy",) + t2i[0][1:]])), ours)
    lora = [("engine", "control-lora.safetensors", 1.0, 0.0, 1.0)]
    ours = engine.pixels(_graph(lora, ckpt="sdxl.safetensors"))
    assert np.abs(ours - engine.pixels(_graph(ckpt="sdxl.safetensors"))).max() > 8
    assert _close(engine.pixels(_graph([("comfy",) + lora[0][1:]], ckpt="sdxl.safetensors")), ours)


def test_a_pack_subclass_is_called_by_the_sampler(engine):
    import cn_pack  # the test pack, imported by the loader under its folder name
    cn_pack.CALLS.update(pre_run=0, cleanup=0, get_control=0)
    doubled = engine.pixels(_graph([("comfy", "canny_sd1.safetensors", 0.5, 0.0, 1.0, True)]))
    assert cn_pack.CALLS["pre_run"] == 1 and cn_pack.CALLS["cleanup"] == 1
    assert cn_pack.CALLS["get_control"] == 3  # positive and negative batched together, one call per step
    assert _close(doubled, engine.pixels(_graph([("engine", "canny_sd1.safetensors", 1.0, 0.0, 1.0)])))


def test_stacks_mix_both_kinds(engine):
    both = [("engine", "canny_sd1.safetensors", 1.0, 0.0, 1.0), ("engine", "depth_sd1.safetensors", 0.8, 0.2, 0.7)]
    ours = engine.pixels(_graph(both))
    for kinds in (("comfy", "engine"), ("engine", "comfy"), ("comfy", "comfy")):
        mixed = [(kind,) + c[1:] for kind, c in zip(kinds, both)]
        assert _close(engine.pixels(_graph(mixed)), ours), kinds


def test_old_apply_lends_its_control_to_the_negative(engine):
    # ComfyUI's Apply ControlNet (OLD) marks control_apply_to_uncond: the negative is steered as well, so it is
    # the same image as applying the ControlNet to both with the newer node.
    for loader in ("engine", "comfy"):
        old = engine.pixels(_graph([(loader, "canny_sd1.safetensors", 0.9, 0.0, 1.0)], old_apply=True))
        both = engine.pixels(_graph([(loader, "canny_sd1.safetensors", 0.9, 0.0, 1.0)]))
        assert np.array_equal(old, both), loader


def test_conventions_translate_both_ways():
    a, b, c, m = (torch.full((1,), float(v)) for v in (1, 2, 3, 9))
    ours = {"input": [a, None, b, c], "output": [a, b, None, c], "middle": [m]}
    comfy = to_comfy(ours)
    assert comfy["input"] == [c, b, None, a]  # popped from the end: input block 0 takes the last
    assert comfy["output"] == [a, b, None, c] and comfy["middle"] == [m]
    back = from_comfy(comfy, 4)
    assert back["input"] == ours["input"] and back["output"] == ours["output"] and back["middle"] == [m]
    # a shorter ComfyUI list meets the deepest skips (output) and the first input blocks (input), as pops do
    short = from_comfy({"output": [b, c], "input": [a], "middle": []}, 4)
    assert short["output"] == [None, None, b, c] and short["input"] == [a, None, None, None]
    assert "middle" not in short and from_comfy(None, 4) is None
    assert from_comfy({"input": [], "middle": [], "output": []}, 4) is None
