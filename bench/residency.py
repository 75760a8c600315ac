"""Issue 6 benchmark: model residency and LoRA patching on full-size SD1.5-architecture checkpoints.

    python bench/residency.py [--quick]

1. Checkpoint switch A -> B -> A: a cold load (fresh residency, file read and converted; the file is in the OS page
   cache after the first read, as it is for a user switching back and forth) against a resident switch (both
   checkpoints within the RAM budget: the switch only hands out the resident networks). Target: resident <= 10 % of
   cold.
2. Rank-32 LoRA on SD1.5 (kohya names, every attention / projection / feed-forward layer of the UNet and every
   attention / MLP layer of the text encoder): read + match, apply, restore. Target: apply <= 1 s on this CPU.
3. Peak RSS of a two-checkpoint session (both resident, a prompt encoded and one sampling step with each), in a
   fresh process, against the bytes of the two checkpoints' converted weights.

The checkpoints are random-weight fp16 files in the real SD1.5 layout written by diffusion.synthetic_checkpoints
into bench/out/ (2.1 GB each; made on first use).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
sys.path.insert(0, ROOT)


def checkpoint(seed: int) -> str:
    name = "sd15_random_fp16.safetensors" if seed == 0 else f"sd15_random_fp16_seed{seed}.safetensors"
    path = os.path.join(OUT, name)
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        subprocess.run([sys.executable, "-m", "diffusion.synthetic_checkpoints", "sd1", path, "--full", "--fp16",
                        "--seed", str(seed)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return path


def touch(loaded) -> None:
    """What a workflow does after CheckpointLoaderSimple: reach each network."""
    loaded.model.unet, loaded.clip.stack, loaded.vae.vae


def switch_times(a: str, b: str, repeats: int) -> dict:
    from model_management.residency import ModelResidency
    cold = []
    for _ in range(repeats):
        models = ModelResidency(ram_budget_bytes=64 << 30)
        start = time.perf_counter()
        touch(models.load_checkpoint(a))
        cold.append(time.perf_counter() - start)
        del models
    models = ModelResidency(ram_budget_bytes=64 << 30)
    touch(models.load_checkpoint(a))
    touch(models.load_checkpoint(b))
    resident = []
    for i in range(repeats * 10):
        path = a if i % 2 == 0 else b
        start = time.perf_counter()
        touch(models.load_checkpoint(path))
        resident.append(time.perf_counter() - start)
    assert models.file_reads == 2
    return {"cold_s": statistics.median(cold), "resident_s": statistics.median(resident),
            "ratio": statistics.median(resident) / statistics.median(cold)}


def kohya_lora(path: str, unet, stack, rank: int = 32) -> int:
    """A rank-`rank` kohya LoRA over every attention/projection/FF linear of the UNet and attention/MLP of CLIP."""
    import torch
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(0)
    state = {}

    def add(prefix: str, weight) -> None:
        out_f, in_f = weight.shape[0], weight.shape[1]
        kernel = list(weight.shape[2:])
        state[prefix + ".lora_down.weight"] = (torch.randn([rank, in_f] + kernel, generator=gen) * 0.01).half()
        state[prefix + ".lora_up.weight"] = (torch.randn([out_f, rank] + [1] * len(kernel), generator=gen)
                                             * 0.01).half()
        state[prefix + ".alpha"] = torch.tensor(float(rank // 2))

    layers = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
              "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
    for name, param in unet.named_parameters():
        if name.endswith(".weight") and name[:-len(".weight")].endswith(layers):
            add("lora_unet_" + name[:-len(".weight")].replace(".", "_"), param)
    text_layers = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    for name, param in stack.encoders[0].model.named_parameters():
        if name.endswith(".weight") and name[:-len(".weight")].endswith(text_layers):
            core = name[:-len(".weight")]
            core = core if core.startswith("text_model.") else "text_model." + core
            add("lora_te_" + core.replace(".", "_"), param)
    save_file(state, path)
    return sum(1 for k in state if k.endswith(".alpha"))


def lora_times(a: str, repeats: int) -> dict:
    from model_management.checkpoints import load_checkpoint
    from model_management.lora_formats import read_lora
    from model_management.weight_patches import WeightPatcher
    loaded = load_checkpoint(a)
    unet, stack = loaded.model.unet, loaded.clip.stack
    path = os.path.join(OUT, "sd15_rank32_lora.safetensors")
    layers = kohya_lora(path, unet, stack)
    unet_names = [n for n, _ in unet.named_parameters()]
    text_names = [n for n, _ in stack.named_parameters()]
    read, apply, restore = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        lora = read_lora(path, unet_names, text_names, "sd1")
        read.append(time.perf_counter() - start)
        assert not lora.unmatched, lora.unmatched[:5]
        for module, specs in ((unet, lora.unet_patches(1.0)), (stack, lora.text_patches(1.0))):
            patcher = WeightPatcher(module, specs)
            start = time.perf_counter()
            patcher.apply()
            apply.append(time.perf_counter() - start)
            start = time.perf_counter()
            patcher.restore()
            restore.append(time.perf_counter() - start)
    # apply/restore were timed per network: sum UNet + text per repeat
    per_apply = [apply[i] + apply[i + 1] for i in range(0, len(apply), 2)]
    per_restore = [restore[i] + restore[i + 1] for i in range(0, len(restore), 2)]
    return {"layers": layers, "file_mb": os.path.getsize(path) / 1e6, "read_s": statistics.median(read),
            "apply_s": statistics.median(per_apply), "restore_s": statistics.median(per_restore)}


def two_checkpoint_session(a: str, b: str) -> dict:
    """Runs in a fresh process (see main): peak RSS with both checkpoints resident and used."""
    import torch
    from model_management.residency import ModelResidency, module_bytes
    from nodes.sampling import common_ksampler
    models = ModelResidency(ram_budget_bytes=64 << 30)
    weights = 0
    for path in (a, b, a):
        loaded = models.load_checkpoint(path)
        cond = loaded.clip.encode("a photo of a cat")[0]
        latent = {"samples": torch.zeros(1, 4, 64, 64)}
        common_ksampler(None, loaded.model, 0, 1, 5.0, "euler", "normal", [[cond, {}]], [[cond, {}]], latent)
    for entry in models.entries.values():
        weights += entry.bytes
    with open("/proc/self/status") as f:
        anon = next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "final_anon_rss_gb": anon / 1e9, "weights_gb": weights / 1e9, "file_reads": models.file_reads}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--session"]:
        print(json.dumps(two_checkpoint_session(argv[1], argv[2])))
        return 0
    repeats = 1 if "--quick" in argv else 3
    a, b = checkpoint(0), checkpoint(1)
    switch = switch_times(a, b, repeats)
    print("| checkpoint switch (SD1.5, fp16 file -> fp32) | median |")
    print("|---|---|")
    print(f"| cold load A | {switch['cold_s']:.2f} s |")
    print(f"| resident switch A<->B | {switch['resident_s'] * 1e6:.0f} µs |")
    print(f"| resident / cold | {switch['ratio'] * 100:.4f} % (target <= 10 %) |")
    print()
    lora = lora_times(a, repeats)
    print(f"| rank-32 LoRA, {lora['layers']} layers, {lora['file_mb']:.0f} MB | median |")
    print("|---|---|")
    print(f"| read + match keys | {lora['read_s']:.2f} s |")
    print(f"| apply (UNet + CLIP) | {lora['apply_s']:.2f} s (target <= 1 s) |")
    print(f"| restore (bit-exact) | {lora['restore_s']:.2f} s |")
    print()
    result = subprocess.run([sys.executable, os.path.abspath(__file__), "--session", a, b], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    session = json.loads(result.stdout.strip().splitlines()[-1])
    print("| two-checkpoint session (A, B, A; encode + 1 step each) | |")
    print("|---|---|")
    print(f"| converted weights of both | {session['weights_gb']:.2f} GB |")
    print(f"| peak RSS (ru_maxrss, incl. mapped file pages) | {session['peak_rss_gb']:.2f} GB |")
    print(f"| anonymous RSS at the end | {session['final_anon_rss_gb']:.2f} GB |")
    print(f"| file reads | {session['file_reads']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
