"""Issue 15: what a checkpoint load costs under each precision policy, and how fast this CPU is in bf16.

    python bench/checkpoint_load.py CHECKPOINT [--reloads 2] [--json]

Per policy (fp32 throughout; the default policy of a bf16 CPU), in a fresh
interpreter with the server's allocator settings and transformers' CLIP code imported first (as the server preloads
it) and the cyclic GC frozen after the imports (as the server does): the first load's time, the peak RSS of the process after it (VmHWM, torch's own import included) and the time
of `--reloads` more loads of the same file in that process (memory already provided). Also a 512x512 matmul in
fp32 and bf16, GFLOP/s: whether bf16 is fast on this CPU at all.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()
import torch
import transformers.models.clip.modeling_clip  # noqa: F401 - the server preloads it
from model_management.checkpoints import load_checkpoint
from model_management.precision_policy import PrecisionPolicy, choose_policy
bf16 = sys.argv[3] == "bf16"
policy = choose_policy(torch.device("cpu"), cpu_flags={"avx512_bf16"}) if bf16 else PrecisionPolicy.full()
gc.collect()
gc.freeze()  # as the server does after start: a load's collections then skip everything imported
started = time.perf_counter()
loaded = load_checkpoint(sys.argv[2], precision=policy)
first = time.perf_counter() - started
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
reloads = []
for _ in range(int(sys.argv[4])):
    del loaded
    gc.collect()
    started = time.perf_counter()
    loaded = load_checkpoint(sys.argv[2], precision=policy)
    reloads.append(time.perf_counter() - started)
print(json.dumps({"first_s": first, "peak": peak, "reloads_s": reloads}))
"""

MATMUL = r"""
import json, time, torch
out = {}
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    a, b = torch.randn(512, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(3):
        a @ b
    out[name] = 3 * 2 * 512 ** 3 / (time.perf_counter() - started) / 1e9
print(json.dumps(out))
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--reloads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    matmul = run(MATMUL)
    rows = [{"policy": policy, **run(CHILD, ROOT, args.checkpoint, policy, str(args.reloads))}
            for policy in ("fp32", "bf16")]
    if args.json:
        print(json.dumps({"matmul_gflops": matmul, "loads": rows}, indent=1))
        return 0
    print(f"512x512 matmul: fp32 {matmul['fp32']:.1f} GFLOP/s, bf16 {matmul['bf16']:.2f} GFLOP/s")
    print("| policy | first load s | peak RSS GB | reloads s |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['policy']} | {row['first_s']:.2f} | {row['peak'] / 2 ** 30:.2f} | "
              f"{', '.join(f'{s:.2f}' for s in row['reloads_s'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
