"""Issue 15: the precision policy end to end through the server, one fresh server process per mode.

Same full-size random SD1.5 fp16 file for every mode (made once: `python -m diffusion.synthetic_checkpoints sd1
FILE --full --fp16`). Per mode: txt2img cold (the job that loads the checkpoint) and after a seed change, the
checkpoint load time the server logs, the server's peak RSS (VmHWM), and the image's PSNR against the first
mode's (default vs --force-fp32: the image difference the policy costs).

    python bench/precision.py CHECKPOINT [--size 256] [--steps 10] [--modes "default" "--force-fp32"] [--settle 15]
                              [--json]

A mode is the extra server flags, "default" for none. The policy each mode resolved to is read from
/system_stats.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.server_harness import ServerProcess  # noqa: E402


def txt2img(size: int, steps: int, seed: int) -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff at dawn",
                                                           "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "bench"}},
    }


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def run_job(server: ServerProcess, prompt: dict, timeout: float) -> tuple:
    started = time.perf_counter()
    status, body = server.post_prompt(prompt)
    if status != 200:
        raise RuntimeError(f"prompt refused: {body}")
    entry = server.wait_history(body["prompt_id"], timeout=timeout)
    elapsed = time.perf_counter() - started
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"job failed: {entry['status']}")
    image = entry["outputs"]["save"]["images"][0]
    return elapsed, os.path.join(server.base_dir, "output", image.get("subfolder", ""), image["filename"])


def psnr(a_path: str, b_path: str) -> float:
    import numpy as np
    from PIL import Image
    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def measure(checkpoint: str, mode: str, size: int, steps: int, timeout: float, settle: float) -> dict:
    base = tempfile.mkdtemp(prefix="tessera_precision_")
    folder = os.path.join(base, "models", "checkpoints")
    os.makedirs(folder)
    os.symlink(os.path.abspath(checkpoint), os.path.join(folder, "sd15.safetensors"))
    flags = [] if mode == "default" else mode.split()
    server = ServerProcess(base, ["--cpu", *flags], packs=()).start(timeout=120)
    time.sleep(settle)  # the server imports the networks' code in the background after it starts listening
    try:
        _, stats = server.json("GET", "/system_stats")
        cold, image = run_job(server, txt2img(size, steps, 1), timeout)
        warm, _ = run_job(server, txt2img(size, steps, 2), timeout)
        rss = peak_rss(server.proc.pid)
        loads = [line for line in server.read_log().splitlines() if line.startswith("loaded checkpoint")]
    finally:
        server.stop()
    load_s = float(loads[0].rsplit(" in ", 1)[1].split()[0]) if loads else None
    return {"mode": mode, "precision": stats["devices"][0].get("precision"), "cold_s": round(cold, 2),
            "seed_change_s": round(warm, 2), "checkpoint_load_s": load_s, "peak_rss_gb": round(rss / 2 ** 30, 2),
            "image": image}


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["default", "--force-fp32"])
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds between the server's start and the first job (its background preload)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    random.seed(0)
    rows = [measure(args.checkpoint, mode, args.size, args.steps, args.timeout, args.settle) for mode in args.modes]
    first = rows[0]
    for row in rows:
        row["psnr_vs_first_db"] = psnr(row["image"], first["image"])
        row["cold_ratio_vs_first"] = round(row["cold_s"] / first["cold_s"], 2)
        row["seed_change_ratio_vs_first"] = round(row["seed_change_s"] / first["seed_change_s"], 2)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"txt2img {args.size}x{args.size}, {args.steps} steps, euler, one image; {os.path.basename(args.checkpoint)}")
    print("| mode | policy | cold s | seed change s | load s | peak RSS GB | PSNR vs first |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        policy = row["precision"] or {}
        shown = ", ".join(f"{k} {v}" for k, v in policy.items() if k != "reason")
        print(f"| {row['mode']} | {shown} | {row['cold_s']} | {row['seed_change_s']} | {row['checkpoint_load_s']} "
              f"| {row['peak_rss_gb']} | {row['psnr_vs_first_db']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
