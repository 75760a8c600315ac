"""Model stack: checkpoint load time and peak RSS; UNet forward and VAE decode against diffusers on the same weights.

Uses a full-size SD1.5 checkpoint with random weights in the real key layout, stored fp16
(`diffusion.synthetic_checkpoints`), cached under bench/out/ and reused. Three measurements, CPU, fp32 compute:

  1. `load_checkpoint` (UNet + VAE + CLIP) in a fresh subprocess per run: wall seconds of the call (median of the
     runs; once as the first load of a process, which pays the lazy transformers import, and once with the imports
     done beforehand) and the subprocess's peak RSS (ru_maxrss), with its RSS before and after the call. The file is
     in the page cache (warm), as on any load after the first.
  2. UNet forward, 64x64 latents, batch 2, context [2, 77, 768]: ours vs diffusers' UNet2DConditionModel holding
     the same weights (converted with diffusers' own convert_ldm_unet_checkpoint, loaded strictly).
  3. VAE decode of one 64x64 latent to 512x512: ours vs diffusers' AutoencoderKL (convert_ldm_vae_checkpoint).
For 2 and 3 both models run fp32 under torch.inference_mode with the same thread count: one warm-up each, then
the timed calls interleaved (ours, theirs, ours, ...) so both see the same machine noise; medians are reported,
with the largest absolute difference of the two outputs to show they compute the same function. The header line
says how many cores other processes kept busy meanwhile: on a shared 2-core machine that is the main source of noise.
Targets (issue 4): UNet forward ours/diffusers <= 1.0; VAE decode ours/diffusers <= 1.0.

    python bench/model_stack.py [--repeats 5] [--load-repeats 3] [--threads N] [--skip load unet vae] [--quick] [--json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

OUT_DIR = os.path.join(ROOT, "bench", "out")
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# Runs in a fresh interpreter so its peak RSS is the load's alone (plus the imports, reported separately). With
# argv[4] == "1" the modules the load imports lazily (transformers' CLIP above all) are imported before the clock
# starts: the cost of a load in a process that has loaded a model before.
LOAD_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[3]))
from model_management.checkpoints import load_checkpoint
if sys.argv[4] == "1":
    import diffusion.text, diffusion.unet, diffusion.vae
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

def rss_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

before = rss_kb()
t0 = time.perf_counter()
loaded = load_checkpoint(sys.argv[2])
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert loaded.model is not None and loaded.vae is not None and loaded.clip is not None
print(json.dumps({"seconds": seconds, "peak_rss_kb": peak, "rss_before_kb": before, "rss_after_kb": rss_kb()}))
"""


def busy_ticks() -> tuple:
    """(machine-wide non-idle CPU seconds, this process's and its children's CPU seconds) so far."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    machine = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    t = os.times()
    return machine, t.user + t.system + t.children_user + t.children_system


def checkpoint_path(quick: bool) -> tuple:
    """The cached synthetic checkpoint (built on first use) and the seconds spent building it (0 if cached)."""
    from diffusion.synthetic_checkpoints import write_checkpoint
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, "sd1_tiny_random_fp16.safetensors" if quick else "sd15_random_fp16.safetensors")
    if os.path.exists(path):
        return path, 0.0
    t0 = time.perf_counter()
    tmp = path + ".tmp"
    write_checkpoint(tmp, "sd1", full=not quick, dtype=torch.float16)
    os.replace(tmp, path)
    gc.collect()
    return path, time.perf_counter() - t0


def load_runs(path: str, repeats: int, threads: int, preimport: bool) -> list:
    runs = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", LOAD_CHILD, ROOT, path, str(threads), "1" if preimport else "0"],
                              cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"load subprocess failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def measure_load(path: str, repeats: int, threads: int) -> dict:
    fresh = load_runs(path, repeats, threads, preimport=False)
    warm = load_runs(path, repeats, threads, preimport=True)
    gb = 1024 ** 2  # ru_maxrss and VmRSS are in KiB on Linux
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {"file_gb": os.path.getsize(path) / 1e9,
            "load_s": med(fresh, "seconds"), "load_s_runs": [r["seconds"] for r in fresh],
            "load_s_imports_done": med(warm, "seconds"), "load_s_imports_done_runs": [r["seconds"] for r in warm],
            "peak_rss_gb": med(fresh, "peak_rss_kb") / gb, "rss_before_gb": med(fresh, "rss_before_kb") / gb,
            "rss_after_gb": med(fresh, "rss_after_kb") / gb,
            "peak_rss_imports_done_gb": med(warm, "peak_rss_kb") / gb}


def read_prefixed(path: str, prefix: str) -> dict:
    """The tensors under `prefix` (prefix kept), read without loading the rest of the file."""
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def diffusers_unet_config(cfg, sample_size: int) -> dict:
    """Our SD1-layout UNetConfig as a diffusers UNet2DConditionModel config (SD1.5's, for the full model)."""
    if (cfg.use_linear_in_transformer or cfg.num_heads <= 0 or cfg.adm_in_channels
            or len(set(cfg.num_res_blocks)) != 1):
        raise ValueError("only SD1-layout UNets are compared")
    levels = range(cfg.num_levels)
    attn = set(cfg.attention_levels)
    return {"sample_size": sample_size, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "down_block_types": tuple("CrossAttnDownBlock2D" if lv in attn else "DownBlock2D" for lv in levels),
            "up_block_types": tuple("CrossAttnUpBlock2D" if lv in attn else "UpBlock2D" for lv in reversed(levels)),
            "block_out_channels": cfg.level_channels, "layers_per_block": cfg.num_res_blocks[0],
            "cross_attention_dim": cfg.context_dim, "attention_head_dim": cfg.num_heads, "norm_num_groups": 32,
            "flip_sin_to_cos": True, "freq_shift": 0}


def diffusers_vae_config(cfg) -> dict:
    n = len(cfg.ch_mult)
    return {"in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
            "down_block_types": ("DownEncoderBlock2D",) * n, "up_block_types": ("UpDecoderBlock2D",) * n,
            "block_out_channels": cfg.widths, "layers_per_block": cfg.num_res_blocks,
            "latent_channels": cfg.z_channels, "norm_num_groups": cfg.norm_groups, "sample_size": 512}


def strict_fp32(model_cls, config: dict, state: dict) -> torch.nn.Module:
    """A diffusers model built on meta, given exactly `state` (strict), then fp32 eval."""
    with torch.device("meta"):
        model = model_cls(**config)
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{model_cls.__name__}: tensors not provided by the checkpoint: {left[:3]}")
    return model.float().eval().requires_grad_(False)


def race(ours, theirs, repeats: int) -> dict:
    """One warm-up each, then `repeats` timed calls of each, interleaved; outputs from the warm-up."""
    with torch.inference_mode():
        a, b = ours(), theirs()
        times = {"ours": [], "theirs": []}
        for _ in range(repeats):
            for name, fn in (("ours", ours), ("theirs", theirs)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ours_s, theirs_s = statistics.median(times["ours"]), statistics.median(times["theirs"])
    pairs = statistics.median(a / b for a, b in zip(times["ours"], times["theirs"]))
    return {"ours_s": ours_s, "diffusers_s": theirs_s, "ratio": ours_s / theirs_s, "ratio_pairs": pairs,
            "ours_runs": times["ours"], "diffusers_runs": times["theirs"],
            "max_abs_diff": (a.float() - b.float()).abs().max().item(), "max_abs_out": a.abs().max().item(),
            "shape": list(a.shape)}


def measure_unet(path: str, latent: int, repeats: int) -> dict:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from model_management.checkpoints import load_checkpoint
    ours = load_checkpoint(path, want_clip=False, want_vae=False).model.unet
    config = diffusers_unet_config(ours.config, latent)
    converted = convert_ldm_unet_checkpoint(read_prefixed(path, UNET_PREFIX), config)
    theirs = strict_fp32(UNet2DConditionModel, config, converted)
    del converted
    gc.collect()
    torch.manual_seed(0)
    x = torch.randn(2, ours.config.in_channels, latent, latent)
    t = torch.tensor([999.0, 421.0])
    context = torch.randn(2, 77, ours.config.context_dim)
    result = race(lambda: ours(x, t, context), lambda: theirs(x, t, encoder_hidden_states=context).sample, repeats)
    result["params_m"] = sum(p.numel() for p in ours.parameters()) / 1e6
    del ours, theirs
    gc.collect()
    return result


def measure_vae(path: str, latent: int, repeats: int) -> dict:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from model_management.checkpoints import load_checkpoint
    ours = load_checkpoint(path, want_model=False, want_clip=False).vae.vae
    config = diffusers_vae_config(ours.config)
    converted = convert_ldm_vae_checkpoint(read_prefixed(path, VAE_PREFIX), config)
    theirs = strict_fp32(AutoencoderKL, config, converted)
    del converted
    gc.collect()
    torch.manual_seed(1)
    z = torch.randn(1, ours.latent_channels, latent, latent)
    result = race(lambda: ours.decode(z), lambda: theirs.decode(z).sample, repeats)
    result["params_m"] = sum(p.numel() for p in ours.decoder.parameters()) / 1e6
    del ours, theirs
    gc.collect()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards/decodes of each model")
    parser.add_argument("--load-repeats", type=int, default=3, help="fresh load subprocesses")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--latent", type=int, default=64, help="latent side (64 -> 512x512 images)")
    parser.add_argument("--quick", action="store_true", help="tiny SD1-layout checkpoint, 32x32 latents: a smoke run")
    parser.add_argument("--skip", nargs="*", default=[], choices=["load", "unet", "vae"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick and args.latent == 64:
        args.latent = 32
    torch.set_num_threads(args.threads)
    path, built_s = checkpoint_path(args.quick)
    result = {"checkpoint": os.path.relpath(path, ROOT), "built_s": built_s, "threads": args.threads,
              "repeats": args.repeats, "latent": args.latent, "torch": torch.__version__}
    import diffusers
    result["diffusers"] = diffusers.__version__
    started, (machine0, own0) = time.perf_counter(), busy_ticks()
    if "load" not in args.skip:
        result["load"] = measure_load(path, args.load_repeats, args.threads)
    if "unet" not in args.skip:
        result["unet"] = measure_unet(path, args.latent, args.repeats)
    if "vae" not in args.skip:
        result["vae"] = measure_vae(path, args.latent, args.repeats)
    result["total_s"] = time.perf_counter() - started
    machine1, own1 = busy_ticks()
    # CPU the rest of the machine used meanwhile, in cores: other work competing for the same cores skews timings.
    result["other_load_cores"] = max(0.0, (machine1 - machine0) - (own1 - own0)) / result["total_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    side = args.latent * 8
    print(f"Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{os.cpu_count()} cores, {args.threads} torch threads; {result['checkpoint']}"
          f"{f' (built in {built_s:.0f} s)' if built_s else ''}; fp32 compute; total {result['total_s']:.0f} s; "
          f"other processes used {result['other_load_cores']:.2f} cores meanwhile")
    print()
    if "load" in result:
        ld = result["load"]
        print(f"load_checkpoint (UNet + VAE + CLIP, fp32 compute copies), fresh subprocess each, median of "
              f"{args.load_repeats}; file in the page cache")
        print()
        print("| metric | value |")
        print("|---|---:|")
        print(f"| file size (fp16) | {ld['file_gb']:.2f} GB |")
        print(f"| load wall time, fresh process (incl. lazy imports) | {ld['load_s']:.2f} s |")
        print(f"| load wall time, imports already done | {ld['load_s_imports_done']:.2f} s |")
        print(f"| peak RSS of the process (ru_maxrss) | {ld['peak_rss_gb']:.2f} GB |")
        print(f"| RSS before the load / after it returns | {ld['rss_before_gb']:.2f} / {ld['rss_after_gb']:.2f} GB |")
        print()
    rows = []
    if "unet" in result:
        rows.append((f"UNet forward, batch 2, {args.latent}x{args.latent} latent", result["unet"]))
    if "vae" in result:
        rows.append((f"VAE decode, batch 1, {args.latent}x{args.latent} -> {side}x{side}", result["vae"]))
    if rows:
        print(f"ours vs diffusers, same weights, median of {args.repeats} interleaved runs after one warm-up")
        print()
        print("| stage | ours | diffusers | ours/diffusers | per-pair median | max abs diff (max abs output) "
              "| target |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, r in rows:
            print(f"| {label} | {r['ours_s']:.2f} s | {r['diffusers_s']:.2f} s | {r['ratio']:.3f} | "
                  f"{r['ratio_pairs']:.3f} | {r['max_abs_diff']:.2e} ({r['max_abs_out']:.3g}) | <= 1.0 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
