"""Issue 16: a full-size SD3.5-medium on this CPU -- load time, seconds per sampling step at 512² and 1024²,
peak memory -- under the default precision policy of [4/6] (bf16 on a CPU with AMX-BF16 or AVX512-BF16).

The file is the synthetic generator's (diffusion/synthetic_sd3.py, `full=True`): SD3.5-medium's MMDiT (MMDiT-X,
2.5 B parameters), the 16-channel VAE and the real-size CLIP-L and bigG in bf16, the released layout; T5-XXL (4.7 B
parameters) is left out unless `--with-t5`, so prompts are read by the two CLIPs as SD3 allows. One fresh process
measures: checkpoint load (file in the page cache), prompt encoding, then one CFG sampling step (the MMDiT on a batch
of 2, the last step of 20) at each size, a VAE decode at 512², and the process's peak RSS (VmHWM).

    python bench/sd3_medium.py [--file /tmp/fullsd/sd3.5_medium.safetensors] [--sizes 512 1024] [--loads 2] [--json]

`--sizes` with no value measures loading only; `--loads 2` loads twice in the process (the second load into memory
the first freed).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FILE = "/tmp/fullsd/sd3.5_medium_incl_clips.safetensors"

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()
import torch
from model_management.checkpoints import load_checkpoint
from model_management.precision_policy import choose_policy
from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample
policy = choose_policy(torch.device("cpu"))
out = {"policy": policy.summary(), "threads": torch.get_num_threads()}
loads = []
for _ in range(int(sys.argv[4])):
    loaded = None
    started = time.perf_counter()
    loaded = load_checkpoint(sys.argv[2], precision=policy)
    loads.append(time.perf_counter() - started)
out["load_s"], out["reload_s"] = loads[0], loads[1:]
started = time.perf_counter()
cond, pooled, _ = loaded.clip.encode("a bottle with a pink and red galaxy inside it on a wooden table")
uncond, upooled, _ = loaded.clip.encode("")
out["encode_s"] = time.perf_counter() - started
positive, negative = [[cond, {"pooled_output": pooled}]], [[uncond, {"pooled_output": upooled}]]
for size in [int(s) for s in sys.argv[3].split(",") if s]:
    latent = torch.zeros(1, 16, size // 8, size // 8)
    sigmas = calculate_sigmas(loaded.model, "sgm_uniform", 20, 1.0, "euler")[-2:]  # the last of 20 steps
    noise = prepare_noise(latent, 1)
    times = []
    def callback(i, total, x, denoised):
        times.append(time.perf_counter())
    started = time.perf_counter()
    samples, _ = sample(loaded.model, noise, positive, negative, 4.5, SamplerChoice("euler"), sigmas, latent, 1,
                        None, callback)
    steps = [times[0] - started] + [b - a for a, b in zip(times, times[1:])]
    out[f"step_s_{size}"] = steps
    if size == 512:
        started = time.perf_counter()
        image = loaded.vae.decode(samples)
        out["decode_512_s"] = time.perf_counter() - started
with open("/proc/self/status") as f:
    out["peak_rss"] = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
out["mmdit_params"] = sum(p.numel() for p in loaded.model.unet.parameters())
print(json.dumps(out))
"""


def make_file(path: str, with_t5: bool) -> None:
    import torch
    from safetensors.torch import save_file
    sys.path.insert(0, ROOT)
    from diffusion.synthetic_sd3 import make_sd3_checkpoint
    text = ("clip_l", "clip_g", "t5xxl") if with_t5 else ("clip_l", "clip_g")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(make_sd3_checkpoint(full=True, text=text, dtype=torch.bfloat16), path)


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=DEFAULT_FILE)
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--with-t5", action="store_true", help="bundle a full-size T5-XXL when making the file")
    parser.add_argument("--loads", type=int, default=1, help="load the checkpoint this many times in the process")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not os.path.exists(args.file):
        make_file(args.file, args.with_t5)
    started = time.perf_counter()
    subprocess.run(["cat", args.file], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    cat_s = time.perf_counter() - started
    result = subprocess.run([sys.executable, "-c", CHILD, ROOT, args.file, ",".join(map(str, args.sizes)),
                             str(max(1, args.loads))], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return 1
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["file_bytes"], row["cat_s"] = os.path.getsize(args.file), cat_s
    if args.json:
        print(json.dumps(row, indent=1))
        return 0
    print(f"SD3.5-medium ({row['mmdit_params'] / 1e9:.2f} B MMDiT parameters), {row['policy']}, "
          f"{row['threads']} threads; file {row['file_bytes'] / 1e9:.2f} GB")
    reloads = "".join(f", then {s:.2f} s" for s in row["reload_s"])
    print(f"  `cat` of the file {row['cat_s']:.2f} s; load {row['load_s']:.2f} s{reloads}; encode (CLIP-L + bigG, "
          f"two prompts) {row['encode_s']:.2f} s, peak RSS {row['peak_rss'] / 1e9:.2f} GB, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}")
    for size in args.sizes:
        steps = row[f"step_s_{size}"]
        print(f"  {size}x{size}: CFG step {', '.join(f'{s:.1f}' for s in steps)} s")
    if "decode_512_s" in row:
        print(f"  VAE decode 512x512: {row['decode_512_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
