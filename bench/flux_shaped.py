"""Issue 16: a Flux-shaped model on this CPU -- Flux.1-dev's full width (3072, 24 heads of 128, MLP 12288) with
fewer blocks -- load time, seconds per sampling step at 512² and 1024², peak memory, under the default precision
policy (bf16 on a CPU with AMX-BF16 or AVX512-BF16), and the full model's cost extrapolated per block.

The checkpoint is the synthetic generator's (diffusion/synthetic_flux.py, `full=True`, `--depth` double and
`--single` single blocks) with the 16-channel VAE, bf16, and no text encoders: the conditioning is random tensors of
T5-XXL's and CLIP-L's widths (256 tokens), which is all the transformer sees. One fresh process loads it and times
one Euler step at each size (guidance 3.5, cfg 1: one transformer call a step, as Flux-dev is sampled).

    python bench/flux_shaped.py [--depth 2] [--single 4] [--sizes 512 1024] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()
import torch
from model_management.checkpoints import load_checkpoint
from model_management.precision_policy import choose_policy
from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample
policy = choose_policy(torch.device("cpu"))
out = {"policy": policy.summary(), "threads": torch.get_num_threads()}
started = time.perf_counter()
loaded = load_checkpoint(sys.argv[2], precision=policy, want_clip=False)
out["load_s"] = time.perf_counter() - started
torch.manual_seed(0)
positive = [[torch.randn(1, 256, 4096), {"pooled_output": torch.randn(1, 768), "guidance": 3.5}]]
for size in [int(s) for s in sys.argv[3].split(",")]:
    latent = torch.zeros(1, 16, size // 8, size // 8)
    sigmas = calculate_sigmas(loaded.model, "simple", 20, 1.0, "euler")[-2:]
    started = time.perf_counter()
    sample(loaded.model, prepare_noise(latent, 1), positive, positive, 1.0, SamplerChoice("euler"), sigmas, latent, 1,
           None, None)
    out[f"step_s_{size}"] = time.perf_counter() - started
with open("/proc/self/status") as f:
    out["peak_rss"] = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
unet = loaded.model.unet
out["params"] = sum(p.numel() for p in unet.parameters())
out["double_params"] = sum(p.numel() for p in unet.double_blocks[0].parameters())
out["single_params"] = sum(p.numel() for p in unet.single_blocks[0].parameters())
print(json.dumps(out))
"""


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--file", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    path = args.file or f"/tmp/fullsd/flux_shaped_{args.depth}x{args.single}.safetensors"
    if not os.path.exists(path):
        import torch
        from safetensors.torch import save_file
        sys.path.insert(0, ROOT)
        from diffusion.synthetic_flux import make_flux_checkpoint
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_file(make_flux_checkpoint(full=True, text=(), dtype=torch.bfloat16, depth=args.depth,
                                       depth_single=args.single), path)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    result = subprocess.run([sys.executable, "-c", CHILD, ROOT, path, ",".join(map(str, args.sizes))],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return 1
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(depth=args.depth, single=args.single, file_bytes=os.path.getsize(path))
    if args.json:
        print(json.dumps(row, indent=1))
        return 0
    print(f"Flux-shaped: {args.depth} double + {args.single} single blocks at full width, {row['params'] / 1e9:.2f} B "
          f"parameters ({row['double_params'] / 1e6:.0f} M a double block, {row['single_params'] / 1e6:.0f} M a "
          f"single one), {row['policy']}, {row['threads']} threads")
    print(f"  load {row['load_s']:.2f} s ({row['file_bytes'] / 1e9:.2f} GB file), peak RSS {row['peak_rss'] / 1e9:.2f} GB")
    for size in args.sizes:
        print(f"  {size}x{size}: one step {row[f'step_s_{size}']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
