"""A newcomer's first image: the tiny synthetic SD1 model's cost per sampling step at 512x512, and the whole
README first-image command (generator + `server.py --run workflows/txt2img.api.json`, 20 steps at 512x512).

    python bench/first_run.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)


def seconds_per_step(repeats: int) -> dict:
    import torch

    from diffusion.synthetic_checkpoints import write_checkpoint
    from model_management.checkpoints import load_checkpoint
    from nodes.sampling import common_ksampler

    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as folder:
        loaded = load_checkpoint(write_checkpoint(os.path.join(folder, "tiny.safetensors"), "sd1", fast=True))
    pos = [[loaded.clip.encode("a photo of a cat")[0], {}]]
    neg = [[loaded.clip.encode("")[0], {}]]
    latent = {"samples": torch.zeros(1, 4, 64, 64)}  # 512x512 pixels

    def run(steps: int) -> float:
        started = time.perf_counter()
        common_ksampler(None, loaded.model, 1, steps, 7.0, "euler", "normal", pos, neg, latent)
        return time.perf_counter() - started

    run(2)  # warm-up
    # the difference of a 12- and a 2-step run cancels the per-call setup: pure per-step cost (CFG: batch 2)
    per_step = [(run(12) - run(2)) / 10 for _ in range(repeats)]
    decode = []
    for _ in range(repeats):
        started = time.perf_counter()
        loaded.vae.decode(torch.zeros(1, 4, 64, 64))
        decode.append(time.perf_counter() - started)
    return {"s_per_step": statistics.median(per_step), "decode_s": statistics.median(decode)}


def unet_forward_seconds(repeats: int) -> dict:
    """One UNet forward at 512x512 (batch 2, as with CFG) for the generator's default tiny SD1 layout and for the
    every-block layout (the previous default, still what the test suite uses)."""
    import torch

    from diffusion.synthetic_checkpoints import _unet_config
    from diffusion.unet.model import UNetModel

    out = {}
    for label, fast in (("fast", True), ("every_block", False)):
        torch.manual_seed(0)
        unet = UNetModel(_unet_config("sd1", False, False, fast=fast)).eval()
        x, t, c = torch.randn(2, 4, 64, 64), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 64)
        with torch.inference_mode():
            unet(x, t, c)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                unet(x, t, c)
                times.append(time.perf_counter() - started)
        out[label] = statistics.median(times)
    return out


def first_image_command() -> float:
    """Wall time of the README's first-image command after `pip install` (generator + --run), in a fresh folder."""
    with tempfile.TemporaryDirectory() as base:
        started = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": ROOT}
        subprocess.run([sys.executable, "-m", "diffusion.synthetic_checkpoints", "sd1"], cwd=base, env=env,
                       check=True, capture_output=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "server.py"), "--run",
                        os.path.join(ROOT, "workflows", "txt2img.api.json"), "--base-directory", base],
                       cwd=base, env=env, check=True, capture_output=True)
        return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    steps = seconds_per_step(args.repeats)
    forwards = unet_forward_seconds(args.repeats)
    whole = first_image_command()
    print("| metric | value | target |\n|---|---:|---:|")
    print(f"| tiny SD1 (generator default), one euler step at 512x512 (CFG, batch 2), median of {args.repeats} | "
          f"{steps['s_per_step']:.3f} s | <= 0.3 s |")
    print(f"| UNet forward at 512x512, batch 2: generator default / every-block layout (the previous default) | "
          f"{forwards['fast']:.3f} s / {forwards['every_block']:.3f} s | |")
    print(f"| tiny SD1 VAE decode 64x64 -> 512x512 | {steps['decode_s']:.3f} s | |")
    print(f"| README first-image command (generate + --run txt2img, 20 steps, 512x512) | {whole:.1f} s | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
