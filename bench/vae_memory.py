"""Working memory of the SD VAE on the CPU: what `vae.memory_used_decode` / `memory_used_encode` estimate.

    python bench/vae_memory.py

A full-size SD VAE with random weights (the layout SD1, SD2 and SDXL share), fp32, batch 1: the peak resident
memory during one decode (by latent size) and one encode (by image size) above the resident memory before it, as
bench/unet_memory.py measures. Prints bytes per latent cell (decode) and per pixel (encode); the largest of each is
the constant model_management/vae_face.py uses.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from unet_memory import _reset_peak, _status_kb  # noqa: E402 - the same high-water-mark probe

SIDES = (32, 48, 64)  # latent sides: 256, 384, 512 pixels


def _peak(fn) -> int:
    before = _status_kb("VmRSS")
    _reset_peak()
    fn()
    return max(0, _status_kb("VmHWM") - before) * 1024


def main(argv: list) -> int:
    from diffusion.vae.config import sd_vae_config
    from diffusion.vae.model import AutoencoderKL
    torch.manual_seed(0)
    vae = AutoencoderKL(sd_vae_config()).eval()
    print("| pass | size | peak above resident (MB) | bytes per unit |")
    print("|---|---|---|---|")
    with torch.inference_mode():
        vae.decode(torch.randn(1, 4, 8, 8))  # warm-up
        for side in SIDES:
            latent = torch.randn(1, 4, side, side)
            used = _peak(lambda: vae.decode(latent))
            print(f"| decode | {side}x{side} latent | {used / 1e6:.0f} | {used / (side * side):.0f} per cell |",
                  flush=True)
        for side in SIDES:
            pixels = torch.rand(1, 3, side * 8, side * 8) * 2 - 1
            used = _peak(lambda: vae.encode(pixels))
            print(f"| encode | {side * 8}x{side * 8} image | {used / 1e6:.0f} | {used / (side * 8) ** 2:.0f} per pixel |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
