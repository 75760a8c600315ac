"""Issue 15: what bf16 buys per model part on this CPU, and the attention kernel against torch's fused one.

    python bench/bf16_parts.py CHECKPOINT [--parts attention unet packed vae esrgan] [--json]

- attention: `diffusion/attention_kernel.blocked_attention` vs torch's fused `scaled_dot_product_attention`, both
  bf16, on SD1.5 / SDXL / VAE shapes (random inputs; [B, heads, tokens, dim] views of [B, tokens, heads*dim], as
  the UNet makes them); mean of 3 calls after one, and each one's relative error against fp64.
- unet: the checkpoint's UNet in bf16, one forward (batch 2, as cfg runs it) at 256² and 512² with the blocked
  kernel and with torch's kernel, interleaved, median of 3; the outputs' relative difference.
- packed: the checkpoint's UNet in bf16, one forward (batch 2) at 256² and 512² with plain conv weights and inside
  `packed_convolutions` (the second forward in the scope), interleaved, median of 3, without and with
  channels-last activations; the outputs' relative difference; the scope's own cost (packing as it starts,
  unpacking as it ends).
- vae: the checkpoint's VAE in fp32 and bf16: decode 256² and 512², encode 256²; decode PSNR bf16 vs fp32.
- esrgan: RRDBNet 4x (6 and 23 blocks, random weights as bench/esrgan_cpu.py makes them), 128->512 through
  `upscale_image`, fp32 vs bf16 weights; PSNR bf16 vs fp32.
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

from model_management.host_allocator import configure_host_allocator  # noqa: E402

configure_host_allocator()  # as the server runs

ATTENTION_SHAPES = [  # name, batch, heads, query tokens, key tokens, head dim
    ("SD1.5 level 1 self 512²", 2, 8, 4096, 4096, 40), ("SD1.5 level 1 cross 512²", 2, 8, 4096, 77, 40),
    ("SD1.5 level 2 self 512²", 2, 8, 1024, 1024, 80), ("SD1.5 level 1 self 256²", 2, 8, 1024, 1024, 40),
    ("SDXL level 2 self 1024²", 2, 10, 4096, 4096, 64), ("SDXL level 3 self 1024²", 2, 20, 1024, 1024, 64),
    ("VAE mid 512²", 1, 1, 4096, 4096, 512), ("VAE mid 256²", 1, 1, 1024, 1024, 512)]


def seconds(call, repeats: int = 3) -> float:
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


def psnr(a, b) -> float:
    mse = float(((a.float().clamp(0, 1) - b.float().clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def attention_rows() -> list:
    import torch
    import torch.nn.functional as F
    from diffusion.attention_kernel import blocked_attention
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, batch, heads, n, m, dim in ATTENTION_SHAPES:
        q, k, v = (torch.randn(batch, tokens, heads * dim, generator=gen, dtype=torch.float32).to(torch.bfloat16)
                   .view(batch, tokens, heads, dim).transpose(1, 2) for tokens in (n, m, m))
        with torch.inference_mode():
            reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())

            def error(out) -> float:
                return float((out.double() - reference).norm() / reference.norm())
            rows.append({"shape": name, "blocked_ms": round(seconds(lambda: blocked_attention(q, k, v)) * 1000, 1),
                         "torch_ms": round(seconds(lambda: F.scaled_dot_product_attention(q, k, v)) * 1000, 1),
                         "blocked_error": round(error(blocked_attention(q, k, v)), 4),
                         "torch_error": round(error(F.scaled_dot_product_attention(q, k, v)), 4)})
    return rows


def unet_rows(checkpoint: str) -> list:
    import torch
    import diffusion.attention_kernel as kernel
    from model_management.checkpoints import load_checkpoint
    from model_management.precision_policy import PrecisionPolicy
    unet = load_checkpoint(checkpoint, want_clip=False, want_vae=False,
                           precision=PrecisionPolicy(unet=torch.bfloat16, reason="bf16")).model.unet
    chooser = kernel.uses_blocked_kernel
    rows = []
    try:
        for size in (256, 512):
            side = size // 8
            x, t, c = torch.randn(2, 4, side, side), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
            times, outs = {True: [], False: []}, {}
            with torch.inference_mode():
                unet(x, t, c)
                for _ in range(3):
                    for blocked in (False, True):
                        kernel.uses_blocked_kernel = chooser if blocked else (lambda *args: False)
                        started = time.perf_counter()
                        outs[blocked] = unet(x, t, c).float()
                        times[blocked].append(time.perf_counter() - started)
            rows.append({"size": size, "torch_kernel_s": round(statistics.median(times[False]), 2),
                         "blocked_kernel_s": round(statistics.median(times[True]), 2),
                         "relative_difference": round(float((outs[True] - outs[False]).norm()
                                                            / outs[False].norm()), 4)})
    finally:
        kernel.uses_blocked_kernel = chooser
    return rows


def packed_rows(checkpoint: str, channels_last: bool = False) -> list:
    import torch
    from model_management.checkpoints import load_checkpoint
    from model_management.packed_convolutions import packed_convolutions
    from model_management.precision_policy import PrecisionPolicy
    unet = load_checkpoint(checkpoint, want_clip=False, want_vae=False,
                           precision=PrecisionPolicy(unet=torch.bfloat16, reason="bf16")).model.unet
    rows = []
    for size in (256, 512):
        side = size // 8
        x, t, c = torch.randn(2, 4, side, side), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)
        times, outs, scope = {True: [], False: []}, {}, []
        with torch.inference_mode():
            unet(x, t, c)
            for _ in range(3):
                started = time.perf_counter()
                outs[False] = unet(x, t, c).float()
                times[False].append(time.perf_counter() - started)
                entering = time.perf_counter()
                with packed_convolutions(unet, channels_last=channels_last):
                    entered = time.perf_counter() - entering  # packs
                    unet(x, t, c)
                    started = time.perf_counter()
                    outs[True] = unet(x, t, c).float()
                    times[True].append(time.perf_counter() - started)
                    leaving = time.perf_counter()
                scope.append(entered + (time.perf_counter() - leaving))
        rows.append({"size": size, "channels_last": channels_last,
                     "plain_s": round(statistics.median(times[False]), 3),
                     "packed_s": round(statistics.median(times[True]), 3),
                     "pack_and_unpack_s": round(statistics.median(scope), 3),
                     "relative_difference": float(f"{float((outs[True] - outs[False]).norm() / outs[False].norm()):.2e}")})
    return rows


def vae_rows(checkpoint: str) -> list:
    import torch
    from model_management.checkpoints import load_checkpoint
    from model_management.precision_policy import PrecisionPolicy
    gen = torch.Generator().manual_seed(0)
    small, large = torch.randn(1, 4, 32, 32, generator=gen), torch.randn(1, 4, 64, 64, generator=gen)
    image = torch.rand(1, 256, 256, 3, generator=gen)
    rows, decoded = [], {}
    for dtype in (torch.float32, torch.bfloat16):
        vae = load_checkpoint(checkpoint, want_model=False, want_clip=False,
                              precision=PrecisionPolicy(vae=dtype, reason="bench")).vae
        with torch.inference_mode():
            decoded[dtype] = (vae.decode(small), vae.decode(large))
            rows.append({"dtype": str(dtype).replace("torch.", ""),
                         "decode_256_s": round(seconds(lambda: vae.decode(small), 1), 2),
                         "decode_512_s": round(seconds(lambda: vae.decode(large), 1), 2),
                         "encode_256_s": round(seconds(lambda: vae.encode(image), 1), 2)})
        del vae
    rows[1]["decode_psnr_vs_fp32_db"] = [round(psnr(a, b), 1) for a, b in
                                         zip(decoded[torch.float32], decoded[torch.bfloat16])]
    return rows


def esrgan_rows() -> list:
    import torch
    from bench.esrgan_cpu import model_file
    from model_management.upscaling import load_upscale_model, upscale_image
    image = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(0))
    rows = []
    for blocks in (6, 23):
        outs, row = {}, {"blocks": blocks}
        for dtype in (torch.float32, torch.bfloat16):
            model = load_upscale_model(model_file(blocks), dtype)
            with torch.inference_mode():
                row[f"{str(dtype).replace('torch.', '')}_s"] = round(seconds(lambda: upscale_image(model, image), 1), 2)
                outs[dtype] = upscale_image(model, image)
        row["psnr_db"] = round(psnr(outs[torch.float32], outs[torch.bfloat16]), 1)
        rows.append(row)
    return rows


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--parts", nargs="+", default=["attention", "unet", "packed", "vae", "esrgan"],
                        choices=["attention", "unet", "packed", "vae", "esrgan"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    makers = {"attention": attention_rows, "unet": lambda: unet_rows(args.checkpoint),
              "packed": lambda: packed_rows(args.checkpoint) + packed_rows(args.checkpoint, True),
              "vae": lambda: vae_rows(args.checkpoint), "esrgan": esrgan_rows}
    results = {part: makers[part]() for part in args.parts}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for part, rows in results.items():
        print(f"{part}:")
        for row in rows:
            print("  " + ", ".join(f"{key} {value}" for key, value in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
