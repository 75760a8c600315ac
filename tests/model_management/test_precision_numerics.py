"""Models under the precision policy: weights stored once in each part's dtype, the bf16 path within a stated
tolerance of fp32 on the same weights (txt2img, img2img, LoRA, ControlNet), the fp32 path unchanged bit for bit,
and LoRA patches applied in bf16 with fp32 accumulation and restored exactly."""
import hashlib
import os
import uuid

import pytest
import torch
from safetensors.torch import load_file

from execution.caches import NoCache
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from model_management.checkpoints import load_checkpoint
from model_management.device_loading import DeviceLoader
from model_management.devices import ComputeDevice
from model_management.precision_policy import PrecisionPolicy
from model_management.residency import ModelResidency
from model_management.services import Services
from model_management.synthetic_controlnets import write_controlnet
from model_management.weight_patches import LoraPatch, WeightPatcher
from nodes import builtin_catalogue
from tests.model_management.leak_workload import write_lora

BF16 = PrecisionPolicy(torch.bfloat16, torch.bfloat16, torch.float32, torch.bfloat16, torch.float32, reason="test")
FULL = PrecisionPolicy.full()
# the tiny model's sampled latents under bf16 stay within this relative RMS difference of fp32's (measured 1.6 to
# 2.3 % across these workflows; bf16 keeps 8 bits of mantissa, about 0.4 % per rounding)
BF16_LATENT_TOLERANCE = 0.04
# sha256 of the fp32 txt2img latent's bytes, per CPU kernel family (oneDNN's fp32 kernels round differently on
# AVX2 and AVX-512, so each machine type has its own); recorded before the precision policy existed
FP32_TXT2IMG_DIGESTS = {
    "AVX2": "b5632e15ac9d90e62fc5cfc766ef3523360bb0a390e5f4c4f2ac787e86385f46",
}


def engine(base, tiny_models, policy, extra_files=()):
    services = Services.for_directory(str(base))
    services.models = ModelResidency(None, DeviceLoader(ComputeDevice(torch.device("cpu"), precision=policy)))
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(services.paths.folder_paths("checkpoints")[0],
                                                           "m.safetensors"))
    for kind, name, path in extra_files:
        os.symlink(path, os.path.join(services.paths.folder_paths(kind)[0], name))
    return services, Executor(builtin_catalogue(), NoCache(), services)


def run(services, executor, prompt):
    checked = validate_prompt(prompt, executor.catalogue, None, services)
    assert checked.ok, (checked.error, checked.node_errors)
    outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order))
    assert outcome.status == "success", outcome.error
    folder = services.paths.output_dir
    files = [os.path.join(root, f) for root, _, names in os.walk(folder) for f in names if f.endswith(".latent")]
    assert len(files) == 1, files
    latent = load_file(files[0])["latent_tensor"]
    os.remove(files[0])
    return latent


def workflow(kind):
    model, clip = ["ckpt", 0], ["ckpt", 1]
    prompt = {"ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}}}
    if kind == "lora":
        prompt["lora"] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": "l.safetensors",
                                                                 "strength_model": 4.0, "strength_clip": 2.0}}
        model, clip = ["lora", 0], ["lora", 1]
    prompt["pos"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red house by a lake", "clip": clip}}
    prompt["neg"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    positive = ["pos", 0]
    if kind == "controlnet":
        prompt["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "c.safetensors"}}
        prompt["hint"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                                 "color": 0xA0C0E0}}
        prompt["apply"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": positive, "control_net": ["cn", 0],
                                                                       "image": ["hint", 0], "strength": 0.9}}
        positive = ["apply", 0]
    if kind == "img2img":
        prompt["img"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                                "color": 0x336699}}
        prompt["latent"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["img", 0], "vae": ["ckpt", 2]}}
        denoise = 0.6
    else:
        prompt["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
        denoise = 1.0
    prompt["sample"] = {"class_type": "KSampler", "inputs": {
        "model": model, "positive": positive, "negative": ["neg", 0], "latent_image": ["latent", 0], "seed": 7,
        "steps": 4, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": denoise}}
    prompt["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": "p"}}
    return prompt


def relative_rms(a, b):
    return float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt())


def test_weights_live_once_in_each_parts_dtype(tiny_models):
    loaded = load_checkpoint(tiny_models.checkpoint("sd1", dtype=torch.float16), precision=BF16)
    unet, stack, vae = loaded.model.unet, loaded.clip.stack, loaded.vae.vae
    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in stack.parameters() if p.is_floating_point()} == {torch.bfloat16}
    assert {p.dtype for p in vae.parameters()} == {torch.float32}
    assert (loaded.model.dtype, loaded.clip.dtype, loaded.vae.dtype) == (torch.bfloat16, torch.bfloat16,
                                                                         torch.float32)
    assert loaded.leftovers == []
    full = load_checkpoint(tiny_models.checkpoint("sd1", dtype=torch.float16), precision=FULL)
    assert {p.dtype for p in full.model.unet.parameters()} == {torch.float32} and full.model.dtype == torch.float32
    # the bf16 weights are the fp16 file's values rounded once, not a copy of an fp32 master
    key = "out.2.weight"
    assert torch.equal(unet.state_dict()[key], full.model.unet.state_dict()[key].to(torch.bfloat16))


def test_bf16_workflows_stay_within_tolerance_of_fp32(tmp_path, tiny_models):
    lora = str(tmp_path / "l.safetensors")
    write_lora(lora, load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False)
               .model.unet.state_dict(), seed=3)
    control = write_controlnet(str(tmp_path / "c.safetensors"), "sd1", seed=4)
    extra = [("loras", "l.safetensors", lora), ("controlnet", "c.safetensors", control)]
    results = {}
    for name, policy in (("fp32", FULL), ("bf16", BF16)):
        services, executor = engine(tmp_path / name, tiny_models, policy, extra)
        results[name] = {kind: run(services, executor, workflow(kind))
                         for kind in ("txt2img", "img2img", "lora", "controlnet")}
        assert services.models.precision == policy
    for kind in ("txt2img", "img2img", "lora", "controlnet"):
        ours, reference = results["bf16"][kind], results["fp32"][kind]
        assert ours.dtype == torch.float32 and ours.shape == reference.shape
        assert not torch.equal(ours, reference)  # bf16 really ran
        assert relative_rms(ours, reference) < BF16_LATENT_TOLERANCE, (kind, relative_rms(ours, reference))
    # the LoRA and ControlNet change the image as much under bf16 as under fp32
    for kind in ("lora", "controlnet"):
        change32 = relative_rms(results["fp32"][kind], results["fp32"]["txt2img"])
        change16 = relative_rms(results["bf16"][kind], results["bf16"]["txt2img"])
        assert change32 > 1.5 * BF16_LATENT_TOLERANCE and abs(change16 - change32) < 0.3 * change32, (
            kind, change32, change16)


def test_fp32_policy_output_is_unchanged_bit_for_bit(tmp_path, tiny_models):
    services, executor = engine(tmp_path / "a", tiny_models, FULL)
    latent = run(services, executor, workflow("txt2img"))
    digest = hashlib.sha256(latent.contiguous().numpy().tobytes()).hexdigest()
    # the library's own default (no policy given) is the same path: identical bytes
    plain = Services.for_directory(str(tmp_path / "b"))
    plain.models = ModelResidency()
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(plain.paths.folder_paths("checkpoints")[0],
                                                           "m.safetensors"))
    again = run(plain, Executor(builtin_catalogue(), NoCache(), plain), workflow("txt2img"))
    assert torch.equal(latent, again)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in FP32_TXT2IMG_DIGESTS:
        assert digest == FP32_TXT2IMG_DIGESTS[capability]


def test_lora_patches_in_bf16_accumulate_in_fp32_and_restore_exactly(tiny_models):
    unet = load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False, precision=BF16).model.unet
    name = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    weight = unet.get_parameter(name)
    original = weight.detach().clone()
    gen = torch.Generator().manual_seed(0)
    out_f, in_f = weight.shape
    first = LoraPatch(torch.randn(out_f, 4, generator=gen) * 0.01, torch.randn(4, in_f, generator=gen) * 0.01, 4.0)
    second = LoraPatch(torch.randn(out_f, 4, generator=gen) * 0.01, torch.randn(4, in_f, generator=gen) * 0.01, 4.0)
    patcher = WeightPatcher(unet, [(name, first, 0.7), (name, second, -0.4)])
    patcher.apply()
    expected = (original.float() + 0.7 * first.delta(weight.shape) - 0.4 * second.delta(weight.shape))
    assert weight.dtype == torch.bfloat16
    # one rounding, at the end: within half a bf16 step (2^-8 relative) of the fp32 sum, and nearly always the
    # nearest bf16 value itself (the fp32 sum's own order of operations may differ in the last fp32 bit)
    error = (weight.detach().float() - expected).abs()
    assert bool((error <= expected.abs() * 2.0 ** -8 + 1e-30).all())
    assert (weight.detach() == expected.to(torch.bfloat16)).float().mean() > 0.99
    stepwise = (original + (0.7 * first.delta(weight.shape)).to(torch.bfloat16)) + \
        (-0.4 * second.delta(weight.shape)).to(torch.bfloat16)
    assert bool((stepwise != weight.detach()).any())  # adding in bf16 would round three times: other values
    patcher.restore()
    assert torch.equal(weight.detach(), original) and weight.dtype == torch.bfloat16
