"""Working memory of one SD1 UNet call on the CPU, by latent size: what `model.memory_required(shape)` estimates.

    python bench/unet_memory.py [checkpoint.safetensors]   # default: a full-size random SD1 file, made once

For each latent size, batch 2 (cond + uncond), fp32: the peak resident memory during one forward above the
resident memory before it (the kernel's high-water mark, reset through /proc/self/clear_refs before each call).
Prints bytes per latent cell and batch item; the largest of them is the constant memory_required uses.
"""
from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

SIZES = (32, 48, 64, 96)  # latent sides: 256, 384, 512, 768 pixels
BATCH = 2


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main(argv: list) -> int:
    from model_management.checkpoints import load_checkpoint
    path = argv[0] if argv else os.path.join(tempfile.gettempdir(), "tessera_sd1_full.safetensors")
    if not os.path.exists(path):
        from diffusion.synthetic_checkpoints import write_checkpoint
        write_checkpoint(path, "sd1", full=True)
    model = load_checkpoint(path, want_clip=False, want_vae=False).model
    unet = model.unet
    context = torch.randn(BATCH, 77, unet.config.context_dim)
    print("| latent | pixels | peak above resident (MB) | bytes per cell and item |")
    print("|---|---|---|---|")
    with torch.inference_mode():
        unet(torch.randn(BATCH, 4, 8, 8), torch.full((BATCH,), 500.0), context)  # warm-up: allocator, kernels
        for side in SIZES:
            x = torch.randn(BATCH, 4, side, side)
            before = _status_kb("VmRSS")
            _reset_peak()
            unet(x, torch.full((BATCH,), 500.0), context)
            peak = _status_kb("VmHWM")
            used = max(0, peak - before) * 1024
            print(f"| {side}x{side} | {side * 8}x{side * 8} | {used / 1e6:.0f} | {used / (BATCH * side * side):.0f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
