"""Engine overhead per node: validation, first run, and fully cached re-run.

Graphs of trivial nodes (PrimitiveInt and IntMath) in two shapes -- a chain and a fan-in (a binary reduction
tree) -- at 100, 1,000 and 5,000 nodes. Reports the median of several repeats in microseconds per node.
Targets (issue 2): linear growth; first run <= 200 us/node; cached re-run <= 20 us/node; validation <= 20 us/node.

    python bench/engine_overhead.py [--sizes 100 1000 5000] [--repeats 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from execution.caches import ClassicCache  # noqa: E402
from execution.events import EventSink  # noqa: E402
from execution.scheduler import Executor, Job  # noqa: E402
from graph.validation import validate_prompt  # noqa: E402
from nodes import builtin_catalogue  # noqa: E402


def chain(n: int) -> dict:
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(n - 2), 0]}}
    return prompt


def fan_in(n: int) -> dict:
    """A binary reduction tree: n/2 leaves summed pairwise down to one output."""
    leaves = max(2, n // 2)
    prompt = {}
    level = []
    for i in range(leaves):
        prompt[f"leaf{i}"] = {"class_type": "PrimitiveInt", "inputs": {"value": i}}
        level.append(f"leaf{i}")
    counter = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            node_id = f"sum{counter}"
            counter += 1
            prompt[node_id] = {"class_type": "IntMath",
                               "inputs": {"a": [level[j], 0], "b": [level[j + 1], 0], "operation": "add"}}
            nxt.append(node_id)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [level[0], 0]}}
    return prompt


def measure(shape: str, n: int, repeats: int, catalogue) -> dict:
    prompt = chain(n) if shape == "chain" else fan_in(n)
    nodes = len(prompt)
    validate_t, first_t, cached_t = [], [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        result = validate_prompt(prompt, catalogue)
        validate_t.append(time.perf_counter() - t0)
        assert result.ok, result.error
        executor = Executor(catalogue, ClassicCache())
        job = Job(f"first{r}", result.prompt, result.outputs, order=result.order)
        t0 = time.perf_counter()
        outcome = executor.execute_sync(job, EventSink())
        first_t.append(time.perf_counter() - t0)
        assert outcome.status == "success" and len(outcome.executed) == nodes
        job = Job(f"again{r}", result.prompt, result.outputs, order=result.order)
        t0 = time.perf_counter()
        outcome = executor.execute_sync(job, EventSink())
        cached_t.append(time.perf_counter() - t0)
        assert outcome.status == "success" and outcome.executed == []
    per_node = lambda samples: statistics.median(samples) / nodes * 1e6  # noqa: E731
    return {"shape": shape, "nodes": nodes, "validate_us": per_node(validate_t), "first_run_us": per_node(first_t),
            "cached_run_us": per_node(cached_t)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = parser.parse_args(argv)
    catalogue = builtin_catalogue()
    measure("chain", 50, 2, catalogue)  # warm up imports and code paths
    rows = [measure(shape, n, args.repeats, catalogue) for shape in ("chain", "fan-in") for n in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"median of {args.repeats}; microseconds per node")
    print()
    print("| shape | nodes | validation | first run | cached re-run |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['shape']} | {row['nodes']} | {row['validate_us']:.1f} | {row['first_run_us']:.1f} | "
              f"{row['cached_run_us']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
