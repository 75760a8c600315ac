"""Issue 15: torch.compile on the full-size SD1.5 UNet against eager, on the CPU, in the dtype given.

    python bench/unet_compile.py CHECKPOINT [--dtype float32|bfloat16] [--repeats 3] [--size 256]
                                 [--backend inductor|openvino] [--freezing]

`--freezing` sets inductor's freezing (weights folded in as constants and prepacked for oneDNN, the CPU inference
setting); `--backend openvino` is OpenVINO's torch.compile backend (`pip install openvino`; bf16 inference
precision when --dtype bfloat16).

Reported: the median eager forward (256x256, batch 2, as cfg runs it), the compiled one, the first compiled call
(the compile itself; inductor caches on disk, so a second run of this script shows the warm-cache figure) and the
largest difference between the two outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model_management.host_allocator import configure_host_allocator  # noqa: E402

configure_host_allocator()  # as the server runs


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backend", default="inductor", choices=("inductor", "openvino"))
    parser.add_argument("--freezing", action="store_true")
    args = parser.parse_args(argv)
    import torch
    if args.freezing:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
    options = None
    if args.backend == "openvino":
        import openvino.torch  # noqa: F401 - registers the backend
        if args.dtype == "bfloat16":
            options = {"config": {"INFERENCE_PRECISION_HINT": "bf16"}}
    from model_management.checkpoints import load_checkpoint
    from model_management.precision_policy import PrecisionPolicy
    dtype = getattr(torch, args.dtype)
    unet = load_checkpoint(args.checkpoint, want_clip=False, want_vae=False,
                           precision=PrecisionPolicy(unet=dtype, reason=args.dtype)).model.unet
    side = args.size // 8
    x, t, c = torch.randn(2, 4, side, side), torch.tensor([500.0, 500.0]), torch.randn(2, 77, 768)

    def median(call) -> float:
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    with torch.inference_mode():
        unet(x, t, c)
        eager = median(lambda: unet(x, t, c))
        compiled = torch.compile(unet, backend=args.backend, options=options)
        started = time.perf_counter()
        compiled(x, t, c)
        first = time.perf_counter() - started
        fast = median(lambda: compiled(x, t, c))
        difference = float((compiled(x, t, c).float() - unet(x, t, c).float()).abs().max())
    print(json.dumps({"backend": args.backend, "freezing": args.freezing, "size": args.size,
                      "dtype": args.dtype, "eager_s": round(eager, 3), "compiled_s": round(fast, 3),
                      "first_compiled_call_s": round(first, 1), "max_abs_difference": difference}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
