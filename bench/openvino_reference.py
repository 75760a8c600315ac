"""Issue 15: the OpenVINO reference -- what a CPU user would pick instead -- on the same weights as our server bench.

The checkpoint's UNet and VAE are converted to diffusers' models with diffusers' own LDM converters (as the tests'
references are), exported with `openvino.convert_model` (what optimum-intel's export does for a diffusers UNet) and
compiled for the CPU with bf16 inference precision; an euler loop with cfg 7 (the two halves batched, as
optimum-intel's pipeline runs it) drives them: `steps` UNet calls then one VAE decode, weights loaded -- the
"sampling + decode" the issue compares against. Shapes static (reshaped to the image size, optimum-intel's
`reshape`) and dynamic. Reported: the median of `--repeats` timed runs after one warm-up, the per-step time, and
the export + compile time.

    pip install openvino            # test-only reference, not a dependency of Tessera
    python bench/openvino_reference.py CHECKPOINT [--size 256] [--steps 10] [--repeats 3] [--json]

(optimum-intel itself pins transformers < 5.6 and huggingface-hub < 1.22, which clash with this environment, so
its pipeline class is not used; the exported graphs and the precision are the same.)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sd_sigmas(steps: int):
    """The SD1 discrete schedule's sigmas at `steps` evenly spaced timesteps (ComfyUI's "normal"), then 0."""
    import torch
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    log_sigmas = (((1 - alphas) / alphas) ** 0.5).log()
    timesteps = torch.linspace(999, 0, steps, dtype=torch.float64)
    low = timesteps.floor().long()
    high = (low + 1).clamp(max=999)
    frac = timesteps - low
    sigmas = ((1 - frac) * log_sigmas[low] + frac * log_sigmas[high]).exp()
    return list(zip(sigmas.tolist(), timesteps.tolist())), 0.0


def export(checkpoint: str, size: int, dynamic: bool):
    """(compiled UNet, compiled VAE decoder, export+compile seconds) for one shape mode."""
    import openvino as ov
    import torch
    from model_management.checkpoints import load_checkpoint
    from tests.diffusion.unet.reference import to_diffusers
    from tests.diffusion.vae.helpers import diffusers_twin

    loaded = load_checkpoint(checkpoint, want_clip=False)
    unet_ref = to_diffusers(loaded.model.unet, loaded.model.unet.config, sample_size=size // 8)
    vae_ref = diffusers_twin(loaded.vae.vae)
    del loaded

    class UNet(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, sample, timestep, context):
            return self.net(sample, timestep, context, return_dict=False)[0]

    class Decoder(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latent):
            return self.vae.decode(latent, return_dict=False)[0]

    side = size // 8
    started = time.perf_counter()
    unet_shapes = ([-1, 4, -1, -1], [-1], [-1, 77, 768]) if dynamic else ([2, 4, side, side], [2], [2, 77, 768])
    with torch.no_grad():
        unet_ov = ov.convert_model(UNet(unet_ref).eval(), example_input=(
            torch.randn(2, 4, side, side), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)),
            input=[ov.PartialShape(s) for s in unet_shapes])
        vae_ov = ov.convert_model(Decoder(vae_ref).eval(), example_input=(torch.randn(1, 4, side, side),),
                                  input=[ov.PartialShape([-1, 4, -1, -1] if dynamic else [1, 4, side, side])])
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"}
    unet_compiled = core.compile_model(unet_ov, "CPU", config)
    vae_compiled = core.compile_model(vae_ov, "CPU", config)
    return unet_compiled, vae_compiled, time.perf_counter() - started


def sample_and_decode(unet, vae, size: int, steps: int, seed: int) -> tuple:
    """Euler, cfg 7, one image: (seconds, seconds per UNet call, the decoded image)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    side = size // 8
    schedule, _ = sd_sigmas(steps)
    context = rng.standard_normal((2, 77, 768)).astype(np.float32)  # [uncond, cond], as the encoders would give
    x = rng.standard_normal((1, 4, side, side)).astype(np.float32) * schedule[0][0]
    unet_request, vae_request = unet.create_infer_request(), vae.create_infer_request()
    started = time.perf_counter()
    for i, (sigma, t) in enumerate(schedule):
        x_in = np.concatenate([x, x]) / math.sqrt(sigma ** 2 + 1)
        eps = unet_request.infer([x_in, np.array([t, t], dtype=np.float32), context])[0]
        uncond, cond = eps[:1], eps[1:]
        denoised = x - (uncond + 7.0 * (cond - uncond)) * sigma
        next_sigma = schedule[i + 1][0] if i + 1 < len(schedule) else 0.0
        x = x + (x - denoised) / sigma * (next_sigma - sigma)
    sampled = time.perf_counter()
    image = vae_request.infer([x / 0.18215])[0]
    done = time.perf_counter()
    return done - started, (sampled - started) / steps, image


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from model_management.host_allocator import configure_host_allocator
    configure_host_allocator()
    rows = []
    for dynamic in (False, True):
        unet, vae, compile_s = export(args.checkpoint, args.size, dynamic)
        sample_and_decode(unet, vae, args.size, args.steps, 0)
        runs = [sample_and_decode(unet, vae, args.size, args.steps, seed + 1) for seed in range(args.repeats)]
        rows.append({"shapes": "dynamic" if dynamic else "static", "size": args.size, "steps": args.steps,
                     "sampling_decode_s": round(statistics.median(r[0] for r in runs), 2),
                     "per_step_s": round(statistics.median(r[1] for r in runs), 3),
                     "export_compile_s": round(compile_s, 1)})
        del unet, vae
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"OpenVINO bf16, {args.size}x{args.size}, {args.steps} steps euler cfg 7, weights loaded")
    print("| shapes | sampling + decode s | per step s | export + compile s |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['shapes']} | {row['sampling_decode_s']} | {row['per_step_s']} | {row['export_compile_s']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
