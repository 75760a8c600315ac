"""A memory-leak workload, run in its own process by test_memory_leak.py (and usable by hand):

    python -m tests.model_management.leak_workload WORKDIR RUNS [--simulate-vram-mb MB]

Two workflows with different checkpoints and different LoRAs run alternately through the real executor and model
residency, with a RAM budget that holds one checkpoint, so every run evicts the other model, reads its file again,
patches and restores weights. With `--simulate-vram-mb` the CPU also acts as a GPU of that size, so the device
loader copies, evicts and streams weights every run too. Prints one JSON line: the process RSS after each run, and residency counters.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import uuid

import torch
from safetensors.torch import save_file


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_lora(path: str, unet_state: dict, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for layer in ("input_blocks_1_1_transformer_blocks_0_attn1_to_q", "output_blocks_3_1_proj_in"):
        weight = unet_state[layer.replace("_transformer_blocks_0_", ".transformer_blocks.0.")
                            .replace("input_blocks_1_1", "input_blocks.1.1")
                            .replace("output_blocks_3_1_proj_in", "output_blocks.3.1.proj_in")
                            .replace("attn1_to_q", "attn1.to_q") + ".weight"]
        out_f, in_f = weight.shape[0], weight.shape[1]
        state[f"lora_unet_{layer}.lora_down.weight"] = torch.randn(4, in_f, *weight.shape[2:], generator=gen) * .1
        state[f"lora_unet_{layer}.lora_up.weight"] = torch.randn(out_f, 4, *([1] * (weight.dim() - 2)),
                                                                 generator=gen) * .1
        state[f"lora_unet_{layer}.alpha"] = torch.tensor(4.0)
    save_file(state, path)


def workflow(ckpt: str, lora: str, seed: int) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "lora": {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": lora,
                                                        "strength_model": 0.8, "strength_clip": 0.5}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red house", "clip": ["lora", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["lora", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["lora", 0], "seed": seed, "steps": 2, "cfg": 5.0,
                                                        "sampler_name": "euler", "scheduler": "normal",
                                                        "positive": ["pos", 0], "negative": ["neg", 0],
                                                        "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "leak"}},
    }


def main(workdir: str, runs: int, simulate_vram_mb: int = 0) -> dict:
    from diffusion.synthetic_checkpoints import write_checkpoint
    from execution.events import RecordingSink
    from execution.scheduler import Executor, Job
    from model_management.services import Services
    from graph.validation import validate_prompt
    from model_management.file_loading import load_state_dict, split_prefix
    from model_management.residency import ModelResidency
    from nodes import builtin_catalogue

    services = Services.for_directory(workdir)
    ckpt_dir = services.paths.folder_paths("checkpoints")[0]
    lora_dir = services.paths.folder_paths("loras")[0]
    names = []
    for i, family in enumerate(("sd1", "sd2")):
        path = os.path.join(ckpt_dir, f"{family}.safetensors")
        write_checkpoint(path, family, seed=10 * i)
        write_lora(os.path.join(lora_dir, f"{family}_style.safetensors"),
                   split_prefix(load_state_dict(path), "model.diffusion_model."), seed=i)
        names.append((f"{family}.safetensors", f"{family}_style.safetensors"))
    biggest = max(os.path.getsize(os.path.join(ckpt_dir, n[0])) for n in names)
    devices = None
    if simulate_vram_mb:
        from model_management.device_loading import DeviceLoader
        from model_management.devices import ComputeDevice
        devices = DeviceLoader(ComputeDevice.simulated(simulate_vram_mb << 20))
    services.models = ModelResidency(ram_budget_bytes=int(biggest * 1.5), devices=devices)  # one checkpoint
    catalogue = builtin_catalogue()
    executor = Executor(catalogue, services=services)
    rss = []
    for run in range(runs):
        ckpt, lora = names[run % 2]
        checked = validate_prompt(workflow(ckpt, lora, run), catalogue, None, services)
        assert checked.ok, checked.node_errors
        outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order),
                                        RecordingSink())
        assert outcome.status == "success", outcome.error
        gc.collect()
        rss.append(rss_bytes())
    return {"rss": rss, "file_reads": services.models.file_reads, "resident": len(services.models.entries),
            "device_held": services.models.devices.held_bytes()}


if __name__ == "__main__":
    simulate = int(sys.argv[sys.argv.index("--simulate-vram-mb") + 1]) if "--simulate-vram-mb" in sys.argv else 0
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), simulate)))
