"""Sampling end to end on a full-size random SD1.5 checkpoint: 256x256, 10 euler steps, CPU.

Through the real server (`python server.py` in a temporary base directory with the checkpoint linked into
models/checkpoints): cold = process start to the saved image; warm = a job with a new prompt text (models loaded,
text re-encoded, sampled, decoded); seed change = a job where only the seed differs. Peak RSS is the server's
VmHWM. In-process: sampler overhead = (sampling time - time inside UNet forwards) / sampling time (target <= 3%).

    python bench/sampling.py [--steps 10] [--size 256]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
CHECKPOINT = os.path.join(HERE, "out", "sd15_random_fp16.safetensors")  # shared with model_stack.py


def ensure_checkpoint() -> str:
    if not os.path.isfile(CHECKPOINT):
        import torch
        from diffusion.synthetic_checkpoints import write_checkpoint
        os.makedirs(os.path.dirname(CHECKPOINT), exist_ok=True)
        write_checkpoint(CHECKPOINT, "sd1", full=True, dtype=torch.float16)
    return CHECKPOINT


def workflow(seed: int, text: str, steps: int, size: int) -> dict:
    with open(os.path.join(ROOT, "workflows", "txt2img.api.json")) as f:
        prompt = json.load(f)
    prompt["4"]["inputs"]["ckpt_name"] = "sd15.safetensors"
    prompt["5"]["inputs"].update(width=size, height=size)
    prompt["3"]["inputs"].update(seed=seed, steps=steps, sampler_name="euler", scheduler="normal")
    prompt["6"]["inputs"]["text"] = text
    return prompt


def post_and_wait(url: str, prompt: dict) -> float:
    started = time.perf_counter()
    request = urllib.request.Request(url + "/prompt", data=json.dumps({"prompt": prompt}).encode(), method="POST")
    prompt_id = json.loads(urllib.request.urlopen(request).read())["prompt_id"]
    while True:
        history = json.loads(urllib.request.urlopen(f"{url}/history/{prompt_id}").read())
        if history:
            entry = history[prompt_id]
            if not entry["status"]["completed"]:
                raise RuntimeError(f"job failed: {entry['status']['messages'][-1]}")
            return time.perf_counter() - started
        time.sleep(0.02)


def peak_rss_gb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def server_run(steps: int, size: int) -> dict:
    from tests.server_harness import free_port
    with tempfile.TemporaryDirectory() as base:
        os.makedirs(os.path.join(base, "models", "checkpoints"))
        os.symlink(ensure_checkpoint(), os.path.join(base, "models", "checkpoints", "sd15.safetensors"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(port),
                                 "--base-directory", base], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            cold = post_and_wait(url, workflow(1, "a red apple on a table", steps, size))
            cold_total = time.perf_counter() - started
            warm = post_and_wait(url, workflow(1, "a green pear on a plate", steps, size))
            seed = post_and_wait(url, workflow(2, "a green pear on a plate", steps, size))
            rss = peak_rss_gb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(120)  # freeing several GB of weights can take a while on a loaded machine
    return {"cold_start_to_image_s": cold_total, "cold_job_s": cold, "warm_s": warm, "seed_change_s": seed,
            "peak_rss_gb": rss}


def overhead_run(steps: int, size: int, repeats: int) -> dict:
    import torch
    from model_management.checkpoints import load_checkpoint
    from nodes.sampling import common_ksampler
    loaded = load_checkpoint(ensure_checkpoint())
    pos = [[loaded.clip.encode("a red apple")[0], {}]]
    neg = [[loaded.clip.encode("")[0], {}]]
    unet = loaded.model.unet
    inside = {"t": 0.0}
    original = unet.forward

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        inside["t"] += time.perf_counter() - t0
        return out
    unet.forward = timed
    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    results = []
    for r in range(repeats + 1):
        inside["t"] = 0.0
        t0 = time.perf_counter()
        common_ksampler(None, loaded.model, r, steps, 7.0, "euler", "normal", pos, neg, latent)
        total = time.perf_counter() - t0
        if r:  # the first run warms up
            results.append(((total - inside["t"]) / total, total))
    return {"sampler_overhead": statistics.median(o for o, _ in results),
            "sampling_s": statistics.median(t for _, t in results)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = server_run(args.steps, args.size)
    result.update(overhead_run(args.steps, args.size, args.repeats))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"full-size random SD1.5 (fp16 file, fp32 compute on CPU), {args.size}x{args.size}, {args.steps} euler "
          f"steps, cfg 7")
    print()
    print("| metric | value | target |")
    print("|---|---:|---:|")
    print(f"| cold: server start to saved image | {result['cold_start_to_image_s']:.1f} s | |")
    print(f"| warm: new prompt text, models resident | {result['warm_s']:.1f} s | |")
    print(f"| seed change only | {result['seed_change_s']:.1f} s | |")
    print(f"| server peak RSS | {result['peak_rss_gb']:.2f} GB | |")
    print(f"| sampling time (in process, median of {args.repeats}) | {result['sampling_s']:.1f} s | |")
    print(f"| sampler overhead outside UNet forwards | {result['sampler_overhead'] * 100:.2f} % | <= 3 % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
