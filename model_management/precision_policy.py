"""Which dtype each model part computes (and is stored) in, per device: the precision policy.

One policy per server, chosen at start from the device, the CPU's feature flags and ComfyUI's precision flags
(`--force-fp32`, `--bf16-unet`, `--fp32-vae`, ...), so a user's habits carry over. Weights are converted to their
part's dtype while the file is read and live in that dtype only (docs/architecture.md §6):

- CPU with AMX-BF16 or AVX512-BF16: bf16 for the UNet, ControlNets, text encoders and the VAE (oneDNN runs bf16
  matmuls and convolutions several times faster than fp32 there; a bf16 VAE decodes 2.2x faster at 47 dB PSNR
  against fp32); upscale models stay fp32 (ESRGAN's 64-channel convolutions gain nothing from bf16: 1.98 s vs
  1.91 s). Measured on an AVX512-BF16 CPU: bench/RESULTS.md "Issue 15".
- Any other CPU: fp32 everywhere (what ComfyUI computes on a CPU).
- CUDA: fp16 for UNet, ControlNets and text encoders from compute capability 6.0 (fp32 before); VAE bf16 where
  the GPU supports it (fp16 VAEs overflow), else fp32; upscale models fp16.
- `--force-fp32` is the full-precision policy: today's fp32 images exactly.

ControlNets always follow the UNet (their residuals are added to its activations).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Optional

import torch

PARTS = ("unet", "text_encoder", "vae", "controlnet", "upscale")
FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
NAMED_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


def read_cpu_flags(cpuinfo_text: Optional[str] = None) -> frozenset:
    """The feature flags of the CPU (the `flags` line of /proc/cpuinfo; `cpuinfo_text` instead of the file, for
    tests). Empty where the file does not exist (macOS, Windows): then no bf16 default is assumed."""
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo_text = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo_text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_fast_bf16(flags: Iterable[str]) -> bool:
    flags = set(flags)
    return any(flag in flags for flag in FAST_BF16_CPU_FLAGS)


@dataclass(frozen=True)
class PrecisionPolicy:
    unet: torch.dtype = torch.float32
    text_encoder: torch.dtype = torch.float32
    vae: torch.dtype = torch.float32
    controlnet: torch.dtype = torch.float32
    upscale: torch.dtype = torch.float32
    reason: str = "full precision"

    @classmethod
    def full(cls) -> "PrecisionPolicy":
        """fp32 for every part (`--force-fp32`; the default of code that builds models without a server)."""
        return cls()

    def dtype_for(self, part: str) -> torch.dtype:
        if part not in PARTS:
            raise ValueError(f"unknown model part {part!r} (one of {', '.join(PARTS)})")
        return getattr(self, part)

    def describe(self) -> dict:
        """Part -> dtype name, and why (logged at start, shown in /system_stats)."""
        out: dict = {part: DTYPE_NAMES.get(self.dtype_for(part), str(self.dtype_for(part))) for part in PARTS}
        out["reason"] = self.reason
        return out

    def summary(self) -> str:
        parts = self.describe()
        return ", ".join(f"{part} {parts[part]}" for part in PARTS) + f" ({self.reason})"


@dataclass
class PrecisionFlags:
    """ComfyUI's precision flags as given on the command line (None: not given)."""
    force_fp32: bool = False
    force_fp16: bool = False
    unet: Optional[str] = None  # "fp32" / "bf16" / "fp16"
    vae: Optional[str] = None
    text_encoder: Optional[str] = None

    @classmethod
    def from_args(cls, args: Any) -> "PrecisionFlags":
        def pick(kind: str) -> Optional[str]:
            chosen = [name for name in ("fp32", "bf16", "fp16") if getattr(args, f"{name}_{kind}", False)]
            return chosen[0] if chosen else None
        return cls(bool(getattr(args, "force_fp32", False)), bool(getattr(args, "force_fp16", False)),
                   pick("unet"), pick("vae"), pick("text_enc"))


def _device_default(device: torch.device, cpu_flags: frozenset,
                    cuda_capability: Optional[tuple], cuda_bf16: bool) -> PrecisionPolicy:
    if device.type == "cpu":
        if cpu_has_fast_bf16(cpu_flags):
            found = sorted(set(FAST_BF16_CPU_FLAGS) & set(cpu_flags))
            return PrecisionPolicy(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.float32,
                                   reason=f"CPU with {'/'.join(found)}: bf16 for UNet, text encoders, VAE and "
                                          f"ControlNets")
        return PrecisionPolicy(reason="CPU without AMX-BF16 or AVX512-BF16: fp32")
    if device.type == "cuda":
        major = (cuda_capability or (0, 0))[0]
        half = torch.float16 if major >= 6 else torch.float32
        vae = torch.bfloat16 if cuda_bf16 else torch.float32
        return PrecisionPolicy(half, half, vae, half, half,
                               reason=f"CUDA compute capability {'.'.join(map(str, cuda_capability or (0, 0)))}")
    # MPS and other accelerators: half precision for the networks, fp32 for the VAE
    return PrecisionPolicy(torch.float16, torch.float16, torch.float32, torch.float16, torch.float16,
                           reason=f"{device.type}: fp16, VAE fp32")


def choose_policy(device: torch.device, flags: Optional[PrecisionFlags] = None,
                  cpu_flags: Optional[Iterable[str]] = None, cuda_capability: Optional[tuple] = None,
                  cuda_bf16: Optional[bool] = None) -> PrecisionPolicy:
    """The policy for `device` under the command-line `flags`. `cpu_flags`, `cuda_capability` and `cuda_bf16`
    default to this machine's (tests pass fixtures)."""
    device = torch.device(device)
    flags = flags or PrecisionFlags()
    if device.type == "cpu" and cpu_flags is None:
        cpu_flags = read_cpu_flags()
    if device.type == "cuda":
        if cuda_capability is None:
            cuda_capability = tuple(torch.cuda.get_device_capability(device))
        if cuda_bf16 is None:
            cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    if flags.force_fp32:
        policy = PrecisionPolicy(reason="--force-fp32")
    elif flags.force_fp16:
        half = torch.float16
        policy = PrecisionPolicy(half, half, half, half, half, reason="--force-fp16")
    else:
        policy = _device_default(device, frozenset(cpu_flags or ()), cuda_capability, bool(cuda_bf16))
    chosen = {part: NAMED_DTYPES[name] for part, name in
              (("unet", flags.unet), ("vae", flags.vae), ("text_encoder", flags.text_encoder)) if name}
    if flags.unet:  # ControlNets follow the UNet they add to
        chosen["controlnet"] = chosen["unet"]
    if chosen:
        given = ", ".join(f"--{name}-{'text-enc' if part == 'text_encoder' else part}"
                          for part, name in (("unet", flags.unet), ("vae", flags.vae),
                                             ("text_encoder", flags.text_encoder)) if name)
        policy = replace(policy, reason=f"{policy.reason}; {given}", **chosen)
    return policy


def policy_of(loader: Any) -> PrecisionPolicy:
    """The policy of a device loader's compute device (full precision for loaders without one)."""
    return getattr(getattr(loader, "compute", None), "precision", None) or PrecisionPolicy.full()
