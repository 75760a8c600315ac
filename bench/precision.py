"""Issue 15: the precision policy end to end through the server, one fresh server process per mode.

Same full-size random SD1.5 fp16 file for every mode (made once: `python -m diffusion.synthetic_checkpoints sd1
FILE --full --fp16`). Per mode: txt2img cold (the job that loads the checkpoint) and after a seed change, timed as
a websocket client sees them (queue to `executing: null`, with the seconds per node), the checkpoint load time the
server logs, the server's peak RSS (VmHWM) after the txt2img jobs and after all; then img2img (denoise 0.6),
txt2img through a rank-32 LoRA and through a full-size ControlNet, once each, for the image difference the policy
costs: every image's PSNR against the first mode's (default vs --force-fp32).

    python bench/precision.py CHECKPOINT [--size 256] [--steps 10] [--modes "default" "--force-fp32"]
                              [--workflows img2img lora controlnet] [--settle 15] [--json]

A mode is the extra server flags, "default" for none. The policy each mode resolved to is read from
/system_stats. The LoRA, ControlNet and input image are made once under bench/out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import aiohttp  # noqa: E402

from tests.server_harness import ServerProcess  # noqa: E402


def txt2img(size: int, steps: int, seed: int, model: list = None, clip: list = None) -> dict:
    model, clip = model or ["ckpt", 0], clip or ["ckpt", 1]
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse on a cliff at dawn", "clip": clip}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {
            "model": model, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "bench"}},
    }


def img2img(size: int, steps: int, seed: int) -> dict:
    prompt = txt2img(size, steps, seed)
    prompt["load"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
    prompt["latent"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["load", 0], "vae": ["ckpt", 2]}}
    prompt["sample"]["inputs"]["denoise"] = 0.6
    return prompt


def lora(size: int, steps: int, seed: int) -> dict:
    prompt = txt2img(size, steps, seed, model=["lora", 0], clip=["lora", 1])
    prompt["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                             "lora_name": "bench_lora.safetensors",
                                                             "strength_model": 1.0, "strength_clip": 1.0}}
    return prompt


def controlnet(size: int, steps: int, seed: int) -> dict:
    prompt = txt2img(size, steps, seed)
    prompt["load"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
    prompt["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "bench_cn.safetensors"}}
    prompt["apply"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": ["pos", 0],
                                                                   "control_net": ["cn", 0], "image": ["load", 0],
                                                                   "strength": 1.0}}
    prompt["sample"]["inputs"]["positive"] = ["apply", 0]
    return prompt


WORKFLOWS = {"img2img": img2img, "lora": lora, "controlnet": controlnet}
INPUT_IMAGE = "bench_input.png"
OUT = os.path.join(ROOT, "bench", "out")


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


async def _run_over_websocket(server: ServerProcess, prompt: dict, timeout: float) -> dict:
    """Queue `prompt` as a websocket client does and time it to its `executing: null`: the total and the seconds
    each node ran (from one `executing` message to the next)."""
    client_id = f"bench-{time.time_ns()}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            started = time.perf_counter()
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"prompt refused: {body}")
            nodes, current, since = {}, None, started
            deadline = started + timeout
            while True:
                msg = await asyncio.wait_for(ws.receive(), max(1.0, deadline - time.perf_counter()))
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data["type"] != "executing" or data["data"].get("prompt_id") != body["prompt_id"]:
                    continue
                now = time.perf_counter()
                if current is not None:
                    nodes[current] = round(nodes.get(current, 0.0) + now - since, 2)
                current, since = data["data"].get("node"), now
                if current is None:
                    return {"seconds": now - started, "nodes": nodes, "prompt_id": body["prompt_id"]}


def run_job(server: ServerProcess, prompt: dict, timeout: float) -> tuple:
    timing = asyncio.run(_run_over_websocket(server, prompt, timeout))
    entry = server.wait_history(timing["prompt_id"], timeout=60)
    if entry["status"]["status_str"] != "success":
        raise RuntimeError(f"job failed: {entry['status']}")
    image = entry["outputs"]["save"]["images"][0]
    return timing, os.path.join(server.base_dir, "output", image.get("subfolder", ""), image["filename"])


def psnr(a_path: str, b_path: str) -> float:
    import numpy as np
    from PIL import Image
    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.float64)
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.float64)
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def fixtures(checkpoint: str, size: int) -> dict:
    """The files the img2img, LoRA and ControlNet workflows read, made once under bench/out: a random-pixel input
    image, a rank-32 kohya LoRA over the checkpoint's attention/MLP layers and a full-size random SD1 ControlNet."""
    os.makedirs(OUT, exist_ok=True)
    import numpy as np
    from PIL import Image
    image = os.path.join(OUT, f"precision_input_{size}.png")
    if not os.path.exists(image):
        pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((size, size)).save(image)
    lora_path = os.path.join(OUT, "precision_sd15_rank32_lora.safetensors")
    if not os.path.exists(lora_path):
        from bench.residency import kohya_lora
        from model_management.checkpoints import load_checkpoint
        loaded = load_checkpoint(checkpoint, want_vae=False)
        kohya_lora(lora_path, loaded.model.unet, loaded.clip.stack)
        del loaded
    control = os.path.join(OUT, "precision_sd1_controlnet_full.safetensors")
    if not os.path.exists(control):
        from model_management.synthetic_controlnets import write_controlnet
        write_controlnet(control, "sd1", full=True)
    return {"image": image, "lora": lora_path, "controlnet": control}


def measure(checkpoint: str, mode: str, size: int, steps: int, workflows: list, files: dict, timeout: float,
            settle: float) -> dict:
    base = tempfile.mkdtemp(prefix="tessera_precision_")
    for folder, name, source in (("models/checkpoints", "sd15.safetensors", checkpoint),
                                 ("models/loras", "bench_lora.safetensors", files["lora"]),
                                 ("models/controlnet", "bench_cn.safetensors", files["controlnet"]),
                                 ("input", INPUT_IMAGE, files["image"])):
        os.makedirs(os.path.join(base, folder), exist_ok=True)
        if folder == "input":  # inputs must lie inside the input folder (a link out of it is refused)
            shutil.copy(source, os.path.join(base, folder, name))
        else:
            os.symlink(os.path.abspath(source), os.path.join(base, folder, name))
    flags = [] if mode == "default" else mode.split()
    server = ServerProcess(base, ["--cpu", *flags], packs=()).start(timeout=120)
    time.sleep(settle)  # the server imports the networks' code in the background after it starts listening
    try:
        _, stats = server.json("GET", "/system_stats")
        cold, image = run_job(server, txt2img(size, steps, 1), timeout)
        warm, _ = run_job(server, txt2img(size, steps, 2), timeout)
        txt2img_rss = peak_rss(server.proc.pid)
        images = {"txt2img": image}
        for name in workflows:
            images[name] = run_job(server, WORKFLOWS[name](size, steps, 1), timeout)[1]
        rss = peak_rss(server.proc.pid)
        loads = [line for line in server.read_log().splitlines() if line.startswith("loaded checkpoint")]
    finally:
        server.stop()
    load_s = float(loads[0].rsplit(" in ", 1)[1].split()[0]) if loads else None
    return {"mode": mode, "precision": stats["devices"][0].get("precision"), "cold_s": round(cold["seconds"], 2),
            "seed_change_s": round(warm["seconds"], 2), "cold_nodes": cold["nodes"], "seed_change_nodes": warm["nodes"],
            "checkpoint_load_s": load_s, "txt2img_peak_rss_gb": round(txt2img_rss / 2 ** 30, 2),
            "peak_rss_gb": round(rss / 2 ** 30, 2), "images": images}


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--modes", nargs="+", default=["default", "--force-fp32"])
    parser.add_argument("--workflows", nargs="*", default=list(WORKFLOWS), choices=list(WORKFLOWS),
                        help="run once per mode after txt2img, for their PSNR")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds between the server's start and the first job (its background preload)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    random.seed(0)
    files = fixtures(args.checkpoint, args.size)
    rows = [measure(args.checkpoint, mode, args.size, args.steps, args.workflows, files, args.timeout, args.settle)
            for mode in args.modes]
    first = rows[0]
    for row in rows:
        row["psnr_vs_first_db"] = {name: round(psnr(path, first["images"][name]), 1)
                                   for name, path in row["images"].items()}
        row["cold_ratio_vs_first"] = round(row["cold_s"] / first["cold_s"], 2)
        row["seed_change_ratio_vs_first"] = round(row["seed_change_s"] / first["seed_change_s"], 2)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"txt2img {args.size}x{args.size}, {args.steps} steps, euler, one image; {os.path.basename(args.checkpoint)}")
    print("| mode | policy | cold s | seed change s | load s | peak RSS GB (txt2img / all) | PSNR vs first dB |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        policy = row["precision"] or {}
        shown = ", ".join(f"{k} {v}" for k, v in policy.items() if k != "reason")
        quality = ", ".join(f"{k} {v}" for k, v in row["psnr_vs_first_db"].items())
        print(f"| {row['mode']} | {shown} | {row['cold_s']} | {row['seed_change_s']} | {row['checkpoint_load_s']} "
              f"| {row['txt2img_peak_rss_gb']} / {row['peak_rss_gb']} | {quality} |")
    for row in rows:
        print(f"{row['mode']}: cold {row['cold_nodes']}; seed change {row['seed_change_nodes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
