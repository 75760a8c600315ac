"""Scale-out on Ray: the single-process server against a front with 1 and with 2 local Ray workers.

Each configuration is a fresh `python server.py` (plus `--workers ray --worker-count N --cpus-per-worker C` for the
fronts) in a temporary base directory with one tiny random-weight SD1 checkpoint. Measured over real HTTP and one
websocket client:
- trivial jobs (PrimitiveInt -> PreviewAny, all different so each executes): J posted at once, jobs/s until the
  last `executing {node: null}`; and one at a time, the median post-to-done latency (the front's routing and the
  Ray round trip show as its excess over the single-process server);
- txt2img-tiny (64², 4 steps, SaveImage, a new seed per job): M posted at once, the makespan and the median
  post-to-done latency, after a warm-up batch that loads the checkpoint on every worker;
- the routing decision itself, in process: `job_keys` of a txt2img prompt and `pick_job` over 100 pending jobs and
  2 workers (what the front adds per dispatch).

    python bench/scaleout.py [--jobs 200] [--images 8] [--cpus-per-worker 1] [--repeats 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.server_harness import ServerProcess  # noqa: E402


def trivial(value: int) -> dict:
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def txt2img(seed: int) -> dict:
    with open(os.path.join(ROOT, "workflows", "txt2img.api.json")) as handle:
        prompt = json.load(handle)
    prompt["4"]["inputs"]["ckpt_name"] = "tiny.safetensors"
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=4, seed=seed)
    prompt["9"]["inputs"]["filename_prefix"] = "bench"
    return prompt


async def run_batch(url: str, prompts: list) -> tuple:
    """Post every prompt at once; (seconds until the last finished, post-to-done seconds of each)."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId=bench") as ws:
            await ws.receive()
            posted = {}
            start = time.perf_counter()
            for prompt in prompts:
                async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": "bench"}) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise RuntimeError(body)
                posted[body["prompt_id"]] = time.perf_counter()
            latencies = []
            while len(latencies) < len(prompts):
                msg = await asyncio.wait_for(ws.receive(), 600)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    pid = data["data"].get("prompt_id") if isinstance(data.get("data"), dict) else None
                    if data["type"] == "executing" and data["data"].get("node") is None and pid in posted:
                        latencies.append(time.perf_counter() - posted.pop(pid))
                    if data["type"] == "execution_error":
                        raise RuntimeError(data)
                elif msg.type != aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"websocket closed: {msg}")
            return time.perf_counter() - start, latencies


def wait_for_workers(server: ServerProcess, count: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, workers = server.json("GET", "/internal/workers")
        if status == 200 and len(workers) == count and all(w["ready"] for w in workers):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} workers not ready:\n{server.read_log()}")


def measure(label: str, extra: list, workers: int, args: argparse.Namespace) -> dict:
    from diffusion.synthetic_checkpoints import write_checkpoint
    with tempfile.TemporaryDirectory() as base:
        os.makedirs(os.path.join(base, "models", "checkpoints"))
        write_checkpoint(os.path.join(base, "models", "checkpoints", "tiny.safetensors"), "sd1")
        started = time.perf_counter()
        server = ServerProcess(base, ["--cpu", *extra], packs=()).start(120)
        try:
            if workers:
                wait_for_workers(server, workers)
            ready = time.perf_counter() - started
            url = server.url
            asyncio.run(run_batch(url, [trivial(-1 - i) for i in range(4)]))  # warm up
            one_by_one = [asyncio.run(run_batch(url, [trivial(10_000 + i)]))[1][0] for i in range(args.single)]
            elapsed, _ = asyncio.run(run_batch(url, [trivial(i) for i in range(args.jobs)]))
            asyncio.run(run_batch(url, [txt2img(1000 + i) for i in range(max(2, workers) * 4)]))  # load everywhere
            makespan, latencies = asyncio.run(run_batch(url, [txt2img(i) for i in range(args.images)]))
            single_image = statistics.median(asyncio.run(run_batch(url, [txt2img(5000 + i)]))[1][0]
                                             for i in range(3))
            spread = {}
            if workers:
                spread = {w["name"]: w["jobs_done"] for w in server.json("GET", "/internal/workers")[1]}
        finally:
            server.stop()
    return {"label": label, "ready_s": ready, "trivial_jobs_per_s": args.jobs / elapsed,
            "trivial_latency_ms": statistics.median(one_by_one) * 1000, "images": args.images,
            "txt2img_makespan_s": makespan, "txt2img_images_per_min": 60 * args.images / makespan,
            "txt2img_latency_s": statistics.median(latencies), "txt2img_alone_s": single_image,
            "jobs_per_worker": spread}


def routing_cost() -> dict:
    """Microseconds per call of what the front computes to route one job (median of many calls)."""
    from nodes import builtin_catalogue
    from scaleout.routing import PendingJob, WorkerView, job_files, job_keys, pick_job
    catalogue = builtin_catalogue()
    prompt = txt2img(1)

    def timed(fn, n):
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e6

    keys_us = timed(lambda: (job_files(prompt), job_keys(prompt, catalogue)), 200)
    needs = [PendingJob(f"j{i}", job_files(txt2img(i)), job_keys(txt2img(i), catalogue), f"c{i % 5}")
             for i in range(100)]
    busy = WorkerView("b", True, frozenset({"other.safetensors"}), frozenset())
    idle = WorkerView("a", False, frozenset(), frozenset())
    # the worst case: every job waits for the busy holder, so the whole queue is read
    held = [PendingJob(n.prompt_id, frozenset({"other.safetensors"}), n.keys, n.client) for n in needs]
    pick_us = timed(lambda: pick_job(idle, needs, [idle, busy]), 500)
    scan_us = timed(lambda: pick_job(idle, held, [idle, busy], spread_after=1000), 500)
    return {"job_keys_us": keys_us, "pick_first_us": pick_us, "pick_scan_100_us": scan_us}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="trivial jobs posted at once")
    parser.add_argument("--single", type=int, default=20, help="trivial jobs posted one at a time")
    parser.add_argument("--images", type=int, default=8, help="txt2img-tiny jobs posted at once")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="fresh servers per configuration; medians reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cpus = ["--cpus-per-worker", str(args.cpus_per_worker)]
    configs = [("single process", [], 0),
               ("front + 1 Ray worker", ["--workers", "ray", "--worker-count", "1", *cpus], 1),
               ("front + 2 Ray workers", ["--workers", "ray", "--worker-count", "2", *cpus], 2)]
    rows = []
    for label, extra, workers in configs:
        runs = [measure(label, extra, workers, args) for _ in range(args.repeats)]
        row = {key: statistics.median(run[key] for run in runs) for key, value in runs[0].items()
               if isinstance(value, float)}
        rows.append({**runs[0], **row})  # label, image count and the first run's job split, then the medians
    cost = routing_cost()
    if args.json:
        print(json.dumps({"rows": rows, "routing": cost}, indent=2))
        return 0
    print(f"{os.cpu_count()} cores; {args.jobs} trivial jobs at once, {args.single} one at a time; "
          f"{args.images} txt2img-tiny (64², 4 steps) at once; --cpus-per-worker {args.cpus_per_worker}; "
          f"medians of {args.repeats} fresh servers each")
    print()
    print("| configuration | ready | trivial jobs/s | trivial job alone | txt2img makespan | images/min "
          "| txt2img latency (median, at once) | txt2img alone | jobs per worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['label']} | {r['ready_s']:.1f} s | {r['trivial_jobs_per_s']:.0f} | "
              f"{r['trivial_latency_ms']:.1f} ms | {r['txt2img_makespan_s']:.2f} s | "
              f"{r['txt2img_images_per_min']:.0f} | {r['txt2img_latency_s']:.2f} s | {r['txt2img_alone_s']:.2f} s | "
              f"{r['jobs_per_worker'] or '-'} |")
    print()
    base = rows[0]["trivial_latency_ms"]
    for r in rows[1:]:
        print(f"- {r['label']}: a trivial job alone takes {r['trivial_latency_ms'] - base:+.1f} ms over the "
              f"single-process server (routing + Ray round trip + event relay)")
    print(f"- routing in the front: job_files + job_keys of a txt2img prompt {cost['job_keys_us']:.0f} µs "
          f"(once per job, cached); pick_job over 100 pending, 2 workers: {cost['pick_first_us']:.1f} µs "
          f"when the first job fits, {cost['pick_scan_100_us']:.0f} µs reading the whole queue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
