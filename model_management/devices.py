"""The compute device and its memory budget (docs/architecture.md §6).

One `ComputeDevice` per server: which torch device runs the networks (CUDA, else MPS, else the CPU; `--cpu` forces
the CPU), the VRAM mode that decides how much of a model may stay on it, the reserve the user keeps for other
programs, and how much memory is free right now. `simulated_bytes` gives the CPU a fake VRAM size: the device loader
then really copies weights into separate tensors, keeps its ledger, evicts and streams exactly as it would on a GPU,
so all of that runs (and is tested) on machines without one.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

import torch

from model_management import host_memory
from model_management.precision_policy import PrecisionFlags, PrecisionPolicy, choose_policy

GIB = 1 << 30


class VRAMMode(str, enum.Enum):
    HIGH = "highvram"      # keep whole models on the device; never stream
    NORMAL = "normalvram"  # MRU set: evict least recently used only as far as needed; stream what does not fit
    LOW = "lowvram"        # a model keeps at most half of the device's usable memory; the rest is streamed
    NO = "novram"          # stream every streamable module at each forward
    CPU = "cpu"            # no accelerator: weights are used where they are


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(force_cpu: bool = False) -> torch.device:
    """CUDA > MPS > CPU."""
    if not force_cpu and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if not force_cpu and mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def ram_total() -> int:
    return host_memory.total_bytes()


def ram_available() -> int:
    return host_memory.available_bytes()


@dataclass
class ComputeDevice:
    device: torch.device
    mode: VRAMMode = VRAMMode.NORMAL
    reserve_bytes: int = 0  # never used for weights (--reserve-vram)
    simulated_bytes: Optional[int] = None  # the CPU pretends to have this much VRAM
    inference_bytes: int = 0  # room kept free for activations when weights are placed
    precision: PrecisionPolicy = field(default_factory=PrecisionPolicy.full)  # dtype per model part

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.device.type == "cpu" and self.simulated_bytes is None:
            self.mode = VRAMMode.CPU

    @classmethod
    def cpu(cls) -> "ComputeDevice":
        return cls(torch.device("cpu"), VRAMMode.CPU)

    @classmethod
    def simulated(cls, total_bytes: int, mode: VRAMMode = VRAMMode.NORMAL, reserve_bytes: int = 0,
                  inference_bytes: int = 0) -> "ComputeDevice":
        return cls(torch.device("cpu"), mode, reserve_bytes, int(total_bytes), inference_bytes)

    @property
    def is_simulated(self) -> bool:
        return self.simulated_bytes is not None

    @property
    def active(self) -> bool:
        """Whether weights are copied to the device at all (never on a plain CPU: no copies, no cost)."""
        return self.device.type != "cpu" or self.is_simulated

    @property
    def name(self) -> str:
        if self.is_simulated:
            return f"cpu (simulated {self.simulated_bytes / GIB:.2f} GiB VRAM)"
        if self.device.type == "cuda":
            return f"{self.device} {torch.cuda.get_device_name(self.device)}"
        return str(self.device)

    # -- memory ---------------------------------------------------------------------------------------------------
    def total_bytes(self) -> int:
        if self.is_simulated:
            return int(self.simulated_bytes)
        if self.device.type == "cuda":
            return torch.cuda.get_device_properties(self.device).total_memory
        if self.device.type == "mps" and hasattr(torch, "mps") and hasattr(torch.mps, "recommended_max_memory"):
            return int(torch.mps.recommended_max_memory())
        return ram_total()

    def usable_bytes(self) -> int:
        """What weights and activations may use at most: the total less the reserve."""
        return max(0, self.total_bytes() - self.reserve_bytes)

    def raw_free_bytes(self, held_bytes: int = 0) -> int:
        """Free memory as the device reports it (the reserve not subtracted). `held_bytes`: what the loader holds,
        which is all a simulated device knows of."""
        if self.is_simulated:
            return max(0, int(self.simulated_bytes) - held_bytes)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            cached = torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
            return free + cached  # blocks torch's allocator holds but does not use are free for us
        if self.device.type == "mps" and hasattr(torch, "mps"):
            return max(0, self.total_bytes() - int(torch.mps.current_allocated_memory()))
        return ram_available()

    def free_bytes(self, held_bytes: int = 0) -> int:
        """Memory free for new weights now: what the device reports, less the reserve."""
        return max(0, self.raw_free_bytes(held_bytes) - self.reserve_bytes)

    def empty_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        elif self.device.type == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()


def device_from_flags(cpu: bool = False, mode: Optional[str] = None, reserve_vram_gb: Optional[float] = None,
                      simulate_vram_gb: Optional[float] = None,
                      precision: Optional[PrecisionFlags] = None) -> ComputeDevice:
    """The server's device from its command-line flags (`mode`: one of the VRAMMode values, None = normal), with
    the precision policy for it (model_management.precision_policy)."""
    reserve = int((reserve_vram_gb or 0) * GIB)
    vram_mode = VRAMMode(mode) if mode else VRAMMode.NORMAL
    if simulate_vram_gb is not None:  # computes on the CPU: the CPU's policy
        simulated = ComputeDevice.simulated(int(simulate_vram_gb * GIB), vram_mode, reserve)
        simulated.precision = choose_policy(simulated.device, precision)
        return simulated
    device = pick_device(force_cpu=cpu or vram_mode is VRAMMode.CPU)
    policy = choose_policy(device, precision)
    if device.type == "cpu":
        return ComputeDevice(device, VRAMMode.CPU, precision=policy)
    # activations of a step need room too: keep about a gigabyte (less on small cards) out of the weights' share
    inference = min(GIB, ComputeDevice(device, vram_mode, reserve).usable_bytes() // 8)
    return ComputeDevice(device, vram_mode, reserve, None, inference, policy)
