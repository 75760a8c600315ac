"""Issue 16: a Flux-shaped transformer larger than `--ram-budget`, run from its memory-mapped file (host streaming,
model_management/host_streaming.py), against the same file loaded into memory as usual.

The file is the synthetic generator's bare transformer (diffusion/synthetic_flux.py `full=True`: Flux.1-dev's full
width, `--depth` double and `--single` single blocks, bf16), what UNETLoader reads from models/diffusion_models. Each
mode runs in a fresh process through ModelResidency exactly as the server's UNETLoader does (the default precision
policy, the same budget logic), and times the load and one Euler step per size (cfg 1, guidance 3.5: one
transformer call a step), with peak RSS (VmHWM: the process's own memory and the file pages it had mapped at once).

"warm": the file is in the OS page cache (read once beforehand), so streaming costs page faults only; "cold"
(`--cold`, needs root): the page cache is dropped before the streamed run, so each streamed layer is read from the
disk during the step -- the case of a file larger than the machine's memory, where every step re-reads it.

    python bench/flux_streaming.py [--depth 2] [--single 4] [--budget-gb 1.0] [--sizes 512] [--cold] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()
import torch
from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample
from model_management.device_loading import DeviceLoader
from model_management.devices import ComputeDevice
from model_management.host_streaming import host_stream_of
from model_management.precision_policy import choose_policy
from model_management.residency import ModelResidency
path, budget, sizes = sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4].split(",")]
compute = ComputeDevice.cpu()
compute.precision = choose_policy(torch.device("cpu"))
models = ModelResidency(budget, DeviceLoader(compute))
out = {"policy": compute.precision.summary(), "threads": torch.get_num_threads()}
started = time.perf_counter()
model = models.load_unet(path)
unet = model.unet
out["load_s"] = time.perf_counter() - started
stream = host_stream_of(unet)
out["stream"] = stream.report() if stream is not None else None
torch.manual_seed(0)
positive = [[torch.randn(1, 256, 4096), {"pooled_output": torch.randn(1, 768), "guidance": 3.5}]]
for size in sizes:
    latent = torch.zeros(1, 16, size // 8, size // 8)
    sigmas = calculate_sigmas(model, "simple", 20, 1.0, "euler")[-2:]
    started = time.perf_counter()
    sample(model, prepare_noise(latent, 1), positive, positive, 1.0, SamplerChoice("euler"), sigmas, latent, 1,
           None, None)
    out[f"step_s_{size}"] = time.perf_counter() - started
with open("/proc/self/status") as f:
    out["peak_rss"] = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
out["resident_bytes"] = models.resident_bytes()
out["params"] = sum(p.numel() for p in unet.parameters())
print(json.dumps(out))
"""


def _child(path: str, budget: int, sizes: list) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, ROOT, path, str(budget), ",".join(map(str, sizes))],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def _drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return True
    except OSError:
        return False


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--single", type=int, default=4)
    parser.add_argument("--budget-gb", type=float, default=1.0, help="the --ram-budget of the streamed run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--cold", action="store_true", help="also a streamed run with the page cache dropped")
    parser.add_argument("--file", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    path = args.file or f"/tmp/fullsd/flux_shaped_{args.depth}x{args.single}_transformer.safetensors"
    if not os.path.exists(path):
        import torch
        from safetensors.torch import save_file
        sys.path.insert(0, ROOT)
        from diffusion.synthetic_flux import flux_config, flux_state
        os.makedirs(os.path.dirname(path), exist_ok=True)
        config = flux_config(True, depth=args.depth, depth_single=args.single)
        save_file(flux_state(config, 0, torch.bfloat16), path)
    budget = int(args.budget_gb * (1 << 30))
    rows = {}
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)  # warm: the file in the page cache
    rows["in memory"] = _child(path, 1 << 40, args.sizes)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    rows["streamed, warm"] = _child(path, budget, args.sizes)
    if args.cold:
        if _drop_page_cache():
            started = time.perf_counter()
            rows["streamed, cold"] = _child(path, budget, args.sizes)
            rows["streamed, cold"]["wall_s"] = time.perf_counter() - started
        else:
            print("--cold: cannot drop the page cache (needs root); skipped", file=sys.stderr)
    if args.json:
        print(json.dumps({"file": path, "file_bytes": os.path.getsize(path), "budget": budget, "rows": rows},
                         indent=1))
        return 0
    first = next(iter(rows.values()))
    print(f"Flux-shaped transformer: {args.depth} double + {args.single} single blocks at full width, "
          f"{first['params'] / 1e9:.2f} B parameters, {os.path.getsize(path) / 1e9:.2f} GB file, {first['policy']}, "
          f"{first['threads']} threads; streamed runs with --ram-budget {args.budget_gb} GB")
    for name, row in rows.items():
        stream = row["stream"]
        held = (f"streams {stream['streamed_bytes'] / 1e9:.2f} GB of {stream['streamed_layers']} layers, keeps "
                f"{stream['kept_bytes'] / 1e9:.2f} GB") if stream else "all in memory"
        steps = ", ".join(f"{size}²: {row[f'step_s_{size}']:.1f} s/step" for size in args.sizes)
        print(f"  {name:15s} load {row['load_s']:.2f} s, {steps}, peak RSS {row['peak_rss'] / 1e9:.2f} GB ({held})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
