"""Issue 15: which kernels a bf16 UNet forward runs on this CPU, and which ops still compute in fp32.

One full-size SD1.5 UNet forward (256², batch 2, as cfg runs it) under the default policy of a bf16 CPU, in a
fresh interpreter with `ONEDNN_VERBOSE=1`, after one warm-up forward:
- oneDNN's primitives by kind and implementation (`brg_matmul:avx512_core_amx` = AMX tiles,
  `jit_bf16:avx512_core_bf16` / `brg_matmul:avx512_core_bf16` = AVX512-BF16 dot products, `jit:uni` / `ref` =
  generic code), with their calls and milliseconds;
- every aten op by the dtypes of its tensor inputs (a dispatch mode around the forward), with calls and
  milliseconds: what is left in fp32.

    python bench/onednn_profile.py CHECKPOINT [--size 256] [--json]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import collections, json, sys, time
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from model_management.checkpoints import load_checkpoint
from model_management.precision_policy import choose_policy
policy = choose_policy(torch.device("cpu"), cpu_flags={"avx512_bf16"})
unet = load_checkpoint(sys.argv[2], want_clip=False, want_vae=False, precision=policy).model.unet
side = int(sys.argv[3]) // 8
x, t, c = torch.randn(2, 4, side, side), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
ops = collections.defaultdict(lambda: [0, 0.0])

class Timed(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = sorted({str(a.dtype).replace("torch.", "") for a in list(args) + list((kwargs or {}).values())
                         if isinstance(a, torch.Tensor)})
        started = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        entry = ops[(str(func.overloadpacket.__name__), "/".join(dtypes))]
        entry[0] += 1
        entry[1] += time.perf_counter() - started
        return out

with torch.inference_mode():
    unet(x, t, c)
    started = time.perf_counter()
    with Timed():
        unet(x, t, c)
    total = time.perf_counter() - started
print(json.dumps({"forward_s": total, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "ops": [[name, dtypes, n, s] for (name, dtypes), (n, s) in ops.items()]}))
"""


def parse_onednn(lines: list) -> list:
    """[kind, implementation, source dtype, calls, ms] per kind/implementation, from oneDNN's verbose lines."""
    table = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        fields = line.split(",")
        if len(fields) < 8 or fields[:4] != ["onednn_verbose", "v1", "primitive", "exec"]:
            continue
        kind, impl = fields[5], fields[6]
        src = next((part.split(":")[1] for part in fields[8].split() if part.startswith("src")), "?")
        entry = table[(kind, impl, src)]
        entry[0] += 1
        entry[1] += float(fields[-1])
    return sorted(([*key, n, round(ms, 1)] for key, (n, ms) in table.items()), key=lambda row: -row[-1])


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    done = subprocess.run([sys.executable, "-c", CHILD, ROOT, args.checkpoint, str(args.size)], env=env,
                          capture_output=True, text=True, check=True)
    stdout = done.stdout.splitlines()
    result = json.loads(stdout[-1])
    # oneDNN prints to stdout; both forwards run the same primitives, so the timed one's are the second half
    execs = [line for line in stdout[:-1] if ",exec," in line]
    kernels = parse_onednn(execs[len(execs) // 2:])
    ops = sorted(result["ops"], key=lambda row: -row[3])
    if args.json:
        print(json.dumps({"forward_s": result["forward_s"], "cpu_capability": result["cpu_capability"],
                          "onednn": kernels, "ops": ops}, indent=1))
        return 0
    print(f"UNet forward {args.size}² batch 2, bf16 policy: {result['forward_s']:.2f} s (dispatch mode on); "
          f"torch CPU capability {result['cpu_capability']}")
    print("| oneDNN primitive | implementation | src dtype | calls | ms |")
    print("|---|---|---|---:|---:|")
    for kind, impl, src, n, ms in kernels:
        print(f"| {kind} | {impl} | {src} | {n} | {ms} |")
    print("| aten op | input dtypes | calls | ms |")
    print("|---|---|---:|---:|")
    for name, dtypes, n, seconds in ops[:25]:
        print(f"| {name} | {dtypes} | {n} | {seconds * 1000:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
