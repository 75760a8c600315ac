"""By hand on a CUDA machine: `python -m tests.model_management.cuda_device_check`. Not collected by pytest (the
suite must pass without a GPU); it exercises what the simulated device cannot: real copies to CUDA in fp16, pinned
staging, the side copy stream, and whole workflows in every VRAM mode. Exits non-zero on the first failure."""
import json
import os
import sys
import tempfile
import time
import uuid

import torch

from diffusion.synthetic_checkpoints import write_checkpoint
from diffusion.unet import UNetModel
from diffusion.unet.config import tiny_sd1_config
from execution.caches import NoCache
from execution.scheduler import Executor, Job
from model_management.services import Services
from graph.validation import validate_prompt
from model_management.device_loading import LOADED, STREAMED, DeviceLoader
from model_management.devices import ComputeDevice, VRAMMode, device_from_flags
from model_management.residency import ModelResidency, module_bytes
from model_management.weight_patches import LoraPatch
from nodes import builtin_catalogue

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def squeezed(mode, weights_room):
    """The real GPU with a reserve that leaves only `weights_room` bytes free."""
    probe = ComputeDevice(torch.device("cuda", 0), mode)
    return ComputeDevice(torch.device("cuda", 0), mode, max(0, probe.raw_free_bytes() - weights_room))


def unet_checks():
    torch.manual_seed(0)
    unet = UNetModel(tiny_sd1_config()).eval().requires_grad_(False)
    size = module_bytes(unet)  # fp32 host; fp16 on the device is half of it
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 4, 16, 16, generator=g).cuda().half(), torch.tensor([999.0, 10.0]).cuda().half()
    c = torch.randn(2, 77, unet.config.context_dim, generator=g).cuda().half()
    keep = lambda name, m: name == "time_embed.0"
    host = {n: (p.data, p.data.clone()) for n, p in unet.named_parameters()}
    outs = {}
    for label, device in (("full", ComputeDevice(torch.device("cuda", 0), VRAMMode.NORMAL)),
                          ("partial", squeezed(VRAMMode.NORMAL, size // 6)),
                          ("novram", ComputeDevice(torch.device("cuda", 0), VRAMMode.NO))):
        loader = DeviceLoader(device)
        with torch.inference_mode(), loader.use(unet, torch.float16, keep_resident=keep):
            rec = loader.record(unet)
            outs[label] = unet(x, t, c).float().cpu()
            print(f"     {label}: loaded {rec.bytes_in(LOADED)} streamed {rec.bytes_in(STREAMED)} "
                  f"copied {loader.streamed_bytes}")
            if label != "full":
                check(rec.bytes_in(STREAMED) > 0 and loader.streamed_bytes > 0, f"{label}: weights streamed")
                staged = [u for u in rec.units if u.state == STREAMED]
                check(all(s.is_pinned() for u in staged for s in u.staging), f"{label}: staging pinned")
        loader.unload(unet)
        check(all(p.data.data_ptr() == host[n][0].data_ptr() and torch.equal(p.data, host[n][1])
                  for n, p in unet.named_parameters()), f"{label}: unload restores the host tensors")
    for label in ("partial", "novram"):
        check(torch.equal(outs[label], outs["full"]), f"{label} forward == full forward (fp16, bit-exact)")

    # a LoRA on streamed layers on the GPU
    loader = DeviceLoader(squeezed(VRAMMode.NORMAL, size // 6))
    rec = loader.load(unet, torch.float16, keep_resident=keep)
    names = [u.name for u in rec.units if u.state == STREAMED and isinstance(u.module, torch.nn.Linear)][:2]
    names += [u.name for u in rec.units if u.state == LOADED and isinstance(u.module, torch.nn.Linear)][:1]
    specs = []
    for name in names:
        o, i = unet.get_submodule(name).weight.shape
        specs.append((name + ".weight", LoraPatch(torch.randn(o, 4, generator=g), torch.randn(4, i, generator=g)), 1.0))
    from model_management.model_objects import _patched
    with torch.inference_mode(), loader.use(unet, torch.float16, keep_resident=keep), _patched(unet, specs, loader):
        patched_stream = unet(x, t, c).float().cpu()
    loader.unload(unet)
    full = DeviceLoader(ComputeDevice(torch.device("cuda", 0), VRAMMode.NORMAL))
    with torch.inference_mode(), full.use(unet, torch.float16, keep_resident=keep), _patched(unet, specs, full):
        patched_full = unet(x, t, c).float().cpu()
    full.unload(unet)
    check(torch.equal(patched_stream, patched_full), "LoRA with streamed layers == LoRA fully loaded")
    check(not torch.equal(patched_full, outs["full"]), "the LoRA changed the output")
    check(all(torch.equal(p.data, host[n][1]) for n, p in unet.named_parameters()), "LoRA restored bit-exact")


def workflow_checks(tmp):
    base = os.path.join(tmp, "base")
    services = Services.for_directory(base)
    ckpt_dir = services.paths.folder_paths("checkpoints")[0]
    os.makedirs(ckpt_dir, exist_ok=True)
    write_checkpoint(os.path.join(ckpt_dir, "v1-5-pruned-emaonly.safetensors"), "sd1")
    with open(os.path.join(ROOT, "workflows", "txt2img.api.json")) as f:
        prompt = json.load(f)
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"]["steps"] = 4
    catalogue = builtin_catalogue()
    results = {}
    for mode in ("cpu", "normalvram", "lowvram", "novram", "highvram"):
        compute = device_from_flags(cpu=(mode == "cpu"), mode=None if mode == "cpu" else mode)
        if mode == "lowvram":  # squeeze so that half of the usable memory is less than the UNet
            compute.reserve_bytes = max(0, compute.total_bytes() - 6_000_000)
        services.models = ModelResidency(devices=DeviceLoader(compute))
        executor = Executor(catalogue, NoCache(), services)
        checked = validate_prompt(prompt, catalogue, None, services)
        start = time.perf_counter()
        outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order))
        check(outcome.status == "success", f"{mode}: txt2img runs ({time.perf_counter() - start:.2f}s) "
                                           f"{outcome.error if outcome.status != 'success' else ''}")
        report = services.models.devices.report()
        print("     ", json.dumps(report))
        if mode != "cpu":
            check(report["device"].startswith("cuda"), f"{mode}: on the GPU")
            check(any(m["loaded_bytes"] > 0 or m["streamed_bytes"] > 0 for m in report["models"]),
                  f"{mode}: models went through the loader")
        if mode == "novram":
            check(services.models.devices.streamed_bytes > 0, "novram streamed")
        images = sorted(os.listdir(services.paths.output_dir))
        results[mode] = images
        services.models.unload_all()
        check(services.models.devices.held_bytes() == 0, f"{mode}: unload_all empties the device")
    check(all(len(v) > 0 for v in results.values()), "every mode saved an image")


def main():
    check(torch.cuda.is_available(), "CUDA available")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    check(device_from_flags().device.type == "cuda", "CUDA picked by default")
    check(device_from_flags(cpu=True).device.type == "cpu", "--cpu forces the CPU")
    policy = device_from_flags().precision
    major = torch.cuda.get_device_capability()[0]
    check(policy.unet == (torch.float16 if major >= 6 else torch.float32) and policy.controlnet == policy.unet,
          f"precision policy by capability: {policy.summary()}")
    check(policy.vae == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32), "VAE precision")
    from model_management.precision_policy import PrecisionFlags
    check(device_from_flags(precision=PrecisionFlags(force_fp32=True)).precision.unet == torch.float32,
          "--force-fp32 on CUDA")
    unet_checks()
    with tempfile.TemporaryDirectory() as tmp:
        workflow_checks(tmp)
    print("all CUDA checks passed")


if __name__ == "__main__":
    main()
