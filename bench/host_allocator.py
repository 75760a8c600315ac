"""Issue 15: the host allocator settings (model_management/host_allocator.py) on a CPU UNet forward and a load.

Each configuration runs in a fresh interpreter: the full-size SD1.5 UNet of CHECKPOINT loaded (fp32), then
`--forwards` forwards at 256x256 (batch 2, as cfg runs it); reported: the load time, the median forward, and the
page faults the forwards took (minor faults, from getrusage).

    python bench/host_allocator.py CHECKPOINT [--forwards 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "1":
    from model_management.host_allocator import _mallopt
    _mallopt()
import torch
from model_management.checkpoints import load_checkpoint
started = time.perf_counter()
model = load_checkpoint(sys.argv[2], want_clip=False, want_vae=False).model
load = time.perf_counter() - started
x, t, c = torch.randn(2, 4, 32, 32), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
times, faults = [], []
with torch.inference_mode():
    model.forward(x, t, c)
    for _ in range(int(sys.argv[4])):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        model.forward(x, t, c)
        times.append(time.perf_counter() - started)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"load_s": load, "forward_s": times, "faults": faults}))
"""

CONFIGS = [("neither", "0", "0"), ("huge pages", "1", "0"), ("mallopt (server default)", "0", "1"), ("both", "1", "1")]


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--forwards", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for name, thp, mallopt in CONFIGS:
        env = {**os.environ, "THP_MEM_ALLOC_ENABLE": thp}
        out = subprocess.run([sys.executable, "-c", CHILD, ROOT, args.checkpoint, mallopt, str(args.forwards)],
                             capture_output=True, text=True, env=env, timeout=3600)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        found = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"config": name, "load_s": round(found["load_s"], 2),
                     "forward_median_s": round(statistics.median(found["forward_s"]), 3),
                     "faults_per_forward": int(statistics.median(found["faults"]))})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    base = rows[0]["forward_median_s"]
    print("| allocator settings | load s | forward median s | vs neither | page faults per forward |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['load_s']} | {row['forward_median_s']} | "
              f"{row['forward_median_s'] / base:.2f}x | {row['faults_per_forward']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
