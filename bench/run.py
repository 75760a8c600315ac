"""Run every benchmark in bench/ (or the ones named) and print their reports.

    python bench/run.py                  # all
    python bench/run.py engine_overhead  # one
Each benchmark runs in a fresh interpreter: one that loaded GBs of weights would otherwise hand its peak RSS to
the subprocesses the next one measures (ru_maxrss survives fork and exec). Copy the tables into bench/RESULTS.md
with the date and the command.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

BENCHMARKS = ["engine_overhead", "server_throughput", "model_stack", "sampling", "residency", "upscale", "editor",
              "first_run", "esrgan_cpu"]
# bench/precision.py and bench/host_allocator.py take a full-size checkpoint file and are run by hand (their
# docstrings say how to make one)


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or BENCHMARKS
    status = 0
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        print(f"## {name} ({time.strftime('%Y-%m-%d')})\n", flush=True)
        status |= subprocess.run([sys.executable, os.path.join(HERE, f"{name}.py")]).returncode
        print(flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
