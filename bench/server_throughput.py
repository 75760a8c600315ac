"""Server throughput: trivial jobs posted by concurrent clients, end to end through the real server.

Starts `python server.py` on a free loopback port in a temporary base directory, measures start -> first 200 on
/health, then has N websocket clients each POST their share of the jobs (all different, so every job executes)
and wait for each job's `executing {node: null}`. Reports jobs/s end to end, p50/p99 POST /prompt latency and the
server's RSS before and after. Targets (issue 3): >= 200 jobs/s, p99 POST <= 20 ms, start <= 2 s.

    python bench/server_throughput.py [--jobs 500] [--clients 10]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(base: str, port: int) -> tuple:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(port),
                             "--base-directory", base], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return proc, time.perf_counter() - started
        except OSError:
            if proc.poll() is not None or time.perf_counter() - started > 60:
                raise RuntimeError("server failed to start")
            time.sleep(0.005)


def percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def client(url: str, name: str, values: range, latencies: list) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{url}/ws?clientId={name}") as ws:
            await ws.receive()
            waiting = set()
            for value in values:
                prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
                t0 = time.perf_counter()
                async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": name}) as r:
                    body = await r.json()
                latencies.append(time.perf_counter() - t0)
                waiting.add(body["prompt_id"])
            while waiting:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["type"] == "executing" and data["data"].get("node") is None:
                    waiting.discard(data["data"].get("prompt_id"))


async def load(url: str, jobs: int, clients: int) -> tuple:
    latencies: list = []
    per = jobs // clients
    t0 = time.perf_counter()
    await asyncio.gather(*(client(url, f"bench{i}", range(i * per, (i + 1) * per), latencies)
                           for i in range(clients)))
    return time.perf_counter() - t0, latencies


def one_run(jobs: int, clients: int) -> dict:
    with tempfile.TemporaryDirectory() as base:
        port = free_port()
        proc, startup = start_server(base, port)
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(load(url, clients, clients))  # warm up: one job per client
            rss_before = rss_mb(proc.pid)
            elapsed, latencies = asyncio.run(load(url, jobs, clients))
            rss_after = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    done = (jobs // clients) * clients
    return {"jobs_per_s": done / elapsed, "post_p50_ms": statistics.median(latencies) * 1000,
            "post_p99_ms": percentile(latencies, 0.99) * 1000, "rss_before_mb": rss_before,
            "rss_after_mb": rss_after, "start_to_first_200_s": startup}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="fresh server each time; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runs = [one_run(args.jobs, args.clients) for _ in range(args.repeats)]
    result = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result.update(jobs=(args.jobs // args.clients) * args.clients, clients=args.clients, repeats=args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['jobs']} trivial jobs, {args.clients} concurrent websocket clients, loopback; "
          f"median of {args.repeats} fresh servers")
    print()
    print("| metric | value | target |")
    print("|---|---:|---:|")
    print(f"| jobs/s end to end | {result['jobs_per_s']:.0f} | >= 200 |")
    print(f"| POST /prompt p50 | {result['post_p50_ms']:.1f} ms | |")
    print(f"| POST /prompt p99 | {result['post_p99_ms']:.1f} ms | <= 20 ms |")
    print(f"| server RSS before / after | {result['rss_before_mb']:.0f} / {result['rss_after_mb']:.0f} MB | |")
    print(f"| start to first 200 | {result['start_to_first_200_s']:.2f} s | <= 2 s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
