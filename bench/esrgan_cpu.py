"""Issue 15: ESRGAN 4x on the CPU, 128x128 -> 512x512, RRDBNet with 23 blocks (RealESRGAN_x4plus's size) and 6
blocks (RealESRGAN_x4plus_anime_6B's), random weights in the released key layout.

Variants, each run in a fresh interpreter (peak RSS = that run's VmHWM), interleaved, `--repeats` times:
  spandrel   -- the model called on the whole image in fp32, NCHW: what ComfyUI's ImageUpscaleWithModel computes
                for an image that fits its 512 px tile (its reference measurement);
  tessera    -- `upscale_image` as the ImageUpscaleWithModel node calls it (tile from free memory, the model's
                memory format and dtype as the loader leaves them), in a process with the server's host allocator
                settings (model_management/host_allocator.py).
Times are of the upscale call alone (the model loaded and one warm-up call first); the median is reported.

    python bench/esrgan_cpu.py [--repeats 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT_DIR = os.path.join(ROOT, "bench", "out")

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
variant = sys.argv[3]
if variant == "tessera":
    from model_management.host_allocator import configure_host_allocator
    configure_host_allocator()  # as the server runs (ComfyUI sets nothing)
import torch
from model_management.upscaling import load_upscale_model, upscale_image
model = load_upscale_model(sys.argv[2])
gen = torch.Generator().manual_seed(0)
image = torch.rand(1, 128, 128, 3, generator=gen)
if variant == "spandrel":
    pixels = image.permute(0, 3, 1, 2).contiguous()
    call = lambda: model.descriptor(pixels)
else:
    call = lambda: upscale_image(model, image)
call()
started = time.perf_counter()
out = call()
elapsed = time.perf_counter() - started
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "peak": peak, "shape": list(out.shape)}))
"""


def model_file(blocks: int) -> str:
    from tests.model_management.upscale_fixtures import realesrgan_state_dict, write_safetensors
    path = os.path.join(OUT_DIR, f"RRDBNet_x4_{blocks}blocks_random.safetensors")
    if not os.path.exists(path):
        os.makedirs(OUT_DIR, exist_ok=True)
        write_safetensors(realesrgan_state_dict(num_feat=64, num_block=blocks, scale=4, seed=blocks), path)
    return path


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for blocks in (6, 23):
        path = model_file(blocks)
        found = {"spandrel": [], "tessera": []}
        for _ in range(args.repeats):
            for variant in found:
                out = subprocess.run([sys.executable, "-c", CHILD, ROOT, path, variant], capture_output=True,
                                     text=True, timeout=1800)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return 1
                found[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for variant, runs in found.items():
            rows.append({"blocks": blocks, "variant": variant,
                         "median_s": round(statistics.median(r["seconds"] for r in runs), 3),
                         "peak_rss_gb": round(max(r["peak"] for r in runs) / 2 ** 30, 2)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| blocks | variant | median s | peak RSS GB |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['blocks']} | {row['variant']} | {row['median_s']} | {row['peak_rss_gb']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
