"""Shared helpers: a catalogue of built-in, V1 test pack and native test nodes, and a one-call job runner."""
import uuid

import pytest

from execution.caches import ClassicCache
from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from nodes import builtin_catalogue
from nodes.v1_adapter import compile_v1
from tests.fixtures import native_nodes, v1_pack


def make_catalogue():
    catalogue = builtin_catalogue()
    for name, cls in v1_pack.NODE_CLASS_MAPPINGS.items():
        catalogue.add(compile_v1(cls, name, python_module="custom_nodes.v1_pack"))
    for cls in native_nodes.NODES:
        catalogue.add(cls.SPEC)
    return catalogue


class Engine:
    """A catalogue + executor pair with a helper that validates and runs a prompt."""

    def __init__(self, cache=None):
        self.catalogue = make_catalogue()
        self.executor = Executor(self.catalogue, cache if cache is not None else ClassicCache())

    def validate(self, prompt, targets=None):
        return validate_prompt(prompt, self.catalogue, targets)

    def run(self, prompt, targets=None, extra_data=None, control=None, sink=None):
        result = self.validate(prompt, targets)
        assert result.ok, (result.error, result.node_errors)
        sink = sink if sink is not None else RecordingSink()
        job = Job(str(uuid.uuid4()), result.prompt, result.outputs, extra_data or {}, result.order)
        if control is not None:
            job.control = control
        outcome = self.executor.execute_sync(job, sink)
        return outcome, sink


@pytest.fixture
def engine():
    return Engine()


class TinyModels:
    """Random-weight checkpoints in the real layouts, written once per test session and shared."""

    def __init__(self, root):
        self.root = root
        self._made = {}

    def checkpoint(self, family="sd1", **variant):
        from diffusion.synthetic_checkpoints import write_checkpoint
        key = (family, tuple(sorted(variant.items())))
        if key not in self._made:
            suffix = "".join(f"-{k}" for k, v in sorted(variant.items()) if v)
            path = str(self.root / f"{family}{suffix}.safetensors")
            self._made[key] = write_checkpoint(path, family, **variant)
        return self._made[key]

    def sd3(self, kind="checkpoint"):
        """Tiny SD3.5-medium-shaped files (diffusion/synthetic_sd3.py), all from seed 0: "checkpoint" (text
        encoders bundled), "checkpoint_no_text", "diffusion_model" (the MMDiT alone, original layout), "vae", and
        the encoder files "clip_l", "clip_g", "t5xxl" (the same weights the checkpoint bundles)."""
        from safetensors.torch import save_file

        from diffusion import synthetic_sd3 as sd3
        key = ("sd3", kind)
        if key not in self._made:
            if kind == "checkpoint":
                state = sd3.make_sd3_checkpoint()
            elif kind == "checkpoint_no_text":
                state = sd3.make_sd3_checkpoint(text=())
            elif kind in ("diffusion_model", "vae"):
                prefix = "model.diffusion_model." if kind == "diffusion_model" else "first_stage_model."
                state = {k[len(prefix):]: v for k, v in sd3.make_sd3_checkpoint(text=()).items()
                         if k.startswith(prefix)}
            else:
                state = sd3.text_encoder_file_state(kind)
            path = str(self.root / f"sd3_{kind}.safetensors")
            save_file(state, path)
            self._made[key] = path
        return self._made[key]

    def flux(self, kind="checkpoint"):
        """Tiny Flux.1 files (diffusion/synthetic_flux.py), seed 0: "checkpoint" (dev, encoders bundled),
        "schnell" (checkpoint without guidance embedding), "diffusion_model" (dev transformer alone), "vae" (ae);
        the encoder files are the SD3 ones (`sd3("clip_l")`, `sd3("t5xxl")`)."""
        from safetensors.torch import save_file

        from diffusion import synthetic_flux as flux
        key = ("flux", kind)
        if key not in self._made:
            if kind == "checkpoint":
                state = flux.make_flux_checkpoint()
            elif kind == "schnell":
                state = flux.make_flux_checkpoint(dev=False)
            else:
                prefix = "model.diffusion_model." if kind == "diffusion_model" else "vae."
                state = {k[len(prefix):]: v for k, v in flux.make_flux_checkpoint(text=()).items()
                         if k.startswith(prefix)}
            path = str(self.root / f"flux_{kind}.safetensors")
            save_file(state, path)
            self._made[key] = path
        return self._made[key]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


def patched_ksampler_prompt(patch_class: str, patch_inputs: dict, steps: int = 3, scheduler: str = "normal",
                            cfg: float = 4.0, seed: int = 5) -> dict:
    """A 64² txt2img prompt on `sd1.safetensors` whose MODEL goes through one patch node ("patch") before the
    KSampler ("sample"); the latent ends in a PreviewAny ("show")."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "patch": {"class_type": patch_class, "inputs": {"model": ["ckpt", 0], **patch_inputs}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["patch", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": "euler",
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["pos", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["sample", 0]}},
    }
