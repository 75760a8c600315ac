"""`comfy.model_management`: devices, memory and interrupts as node packs query them.

Interrupts are per job here: `interrupt_current_processing()` interrupts the job of the node that calls it, and
`InterruptProcessingException` IS the scheduler's `Interrupted`, so a pack raising it ends its job as interrupted
(not failed). Devices, the VRAM state and the memory figures come from the bound model manager's device loader
(model_management.device_loading) when there is one, else CUDA, MPS or the CPU; `load_models_gpu`, `free_memory`
and `unload_all_models` are its operations.
"""
from __future__ import annotations

import enum
from typing import Any, Optional

import torch

from compat import _runtime
from execution.context import Interrupted, current_context
from model_management import devices as _devices

InterruptProcessingException = Interrupted
OOM_EXCEPTION = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)


class VRAMState(enum.Enum):
    DISABLED = 0  # no VRAM: the CPU runs everything
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


_mps_available = _devices.mps_available


def _manager() -> Any:
    services = _runtime.state.services
    return getattr(services, "models", None) if services is not None else None


def _compute() -> Any:
    """The bound manager's ComputeDevice (model_management.devices), or None."""
    return getattr(getattr(_manager(), "devices", None), "compute", None)


_STATE_OF_MODE = {"highvram": VRAMState.HIGH_VRAM, "normalvram": VRAMState.NORMAL_VRAM,
                  "lowvram": VRAMState.LOW_VRAM, "novram": VRAMState.NO_VRAM, "cpu": VRAMState.DISABLED}


def _vram_state() -> VRAMState:
    compute = _compute()
    if compute is not None:
        return _STATE_OF_MODE[compute.mode.value]
    return VRAMState.NORMAL_VRAM if torch.cuda.is_available() else VRAMState.DISABLED


def _cpu_state() -> CPUState:
    kind = get_torch_device().type
    return CPUState.GPU if kind == "cuda" else (CPUState.MPS if kind == "mps" else CPUState.CPU)


def __getattr__(name: str) -> Any:
    """`vram_state` and `cpu_state` are read live from the device (a pack that assigns them keeps its value)."""
    if name == "vram_state":
        return _vram_state()
    if name == "cpu_state":
        return _cpu_state()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- devices ------------------------------------------------------------------------------------------------------
def get_torch_device() -> torch.device:
    device = getattr(_manager(), "device", None)
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def intermediate_dtype() -> torch.dtype:
    """The dtype of tensors handed between nodes (images, latents): float32, as in ComfyUI by default."""
    return torch.float32


def intermediate_device() -> torch.device:
    """Where nodes leave tensors between nodes (IMAGE, MASK): the CPU."""
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def text_encoder_device() -> torch.device:
    return get_torch_device()


def text_encoder_offload_device() -> torch.device:
    return torch.device("cpu")


def vae_device() -> torch.device:
    return get_torch_device()


def vae_offload_device() -> torch.device:
    return torch.device("cpu")


def get_autocast_device(dev: Any) -> str:
    return getattr(dev, "type", "cuda")


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


def mps_mode() -> bool:
    return get_torch_device().type == "mps"


def xformers_enabled() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device if device is not None else get_torch_device()
    return getattr(device, "type", None) == "cuda"


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    device = device if device is not None else get_torch_device()
    return getattr(device, "type", None) == "cuda" and torch.cuda.is_bf16_supported()


def _policy_dtype(part: str, device: Any) -> Optional[torch.dtype]:
    """The server's precision policy for `part`, when a server is bound and `device` is its compute device."""
    compute = _compute()
    if compute is None:
        return None
    if device is not None and torch.device(device).type != compute.device.type:
        return None
    return compute.precision.dtype_for(part)


def unet_dtype(device: Any = None, *args: Any, **kwargs: Any) -> torch.dtype:
    """What the diffusion model computes in: the precision policy's (--force-fp32, --bf16-unet, bf16 on AMX CPUs)."""
    return _policy_dtype("unet", device) or (torch.float16 if should_use_fp16(device) else torch.float32)


def vae_dtype(device: Any = None, *args: Any, **kwargs: Any) -> torch.dtype:
    return _policy_dtype("vae", device) or torch.float32


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    return _policy_dtype("text_encoder", device) or (torch.float16 if should_use_fp16(device) else torch.float32)


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(device)


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: Optional[torch.dtype], copy: bool = False) -> Any:
    return tensor.to(device=device, dtype=dtype, copy=copy, non_blocking=device_supports_non_blocking(device))


# -- memory ---------------------------------------------------------------------------------------------------------
def _is_compute(dev: Any) -> bool:
    compute = _compute()
    return compute is not None and compute.active and (dev is None or torch.device(dev).type == compute.device.type)


def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    if _is_compute(dev) and _compute().is_simulated:
        total = _compute().total_bytes()
        return (total, total) if torch_total_too else total
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        total = torch.cuda.get_device_properties(dev).total_memory
        reserved = torch.cuda.memory_reserved(dev)
        return (total, reserved) if torch_total_too else total
    total = _ram_bytes()
    return (total, total) if torch_total_too else total


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    if _is_compute(dev) and _compute().is_simulated:
        free = _manager().devices.compute.raw_free_bytes(_manager().devices.held_bytes())
        return (free, free) if torch_free_too else free
    dev = dev if dev is not None else get_torch_device()
    if is_device_cuda(dev):
        free_cuda, _ = torch.cuda.mem_get_info(dev)
        free_torch = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        return (free_cuda + free_torch, free_torch) if torch_free_too else free_cuda + free_torch
    free = _ram_available()
    return (free, free) if torch_free_too else free


_ram_bytes = _devices.ram_total
_ram_available = _devices.ram_available


def minimum_inference_memory() -> int:
    """Room kept free for activations when weights are placed."""
    compute = _compute()
    return compute.inference_bytes if compute is not None else 1 << 30


def extra_reserved_memory() -> int:
    """The user's reserve (--reserve-vram)."""
    compute = _compute()
    return compute.reserve_bytes if compute is not None else 0


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    elif _mps_available() and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def _delegate(name: str, *args: Any, **kwargs: Any) -> Any:
    fn = getattr(_manager(), name, None)
    return fn(*args, **kwargs) if callable(fn) else None


def load_models_gpu(models: Any, memory_required: int = 0, *args: Any, **kwargs: Any) -> None:
    """Handed to the model manager when it offers `load_models_gpu`; otherwise models stay where they are."""
    _delegate("load_models_gpu", models, memory_required, *args, **kwargs)


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def free_memory(memory_required: int, device: Any = None, keep_loaded: Any = ()) -> None:
    """Evict least recently used device copies (module by module) until `memory_required` bytes were freed."""
    _delegate("free_memory", memory_required, device, keep_loaded)


def unload_all_models() -> None:
    """Drop every device copy and resident file (they are read again on their next use)."""
    _delegate("unload_all_models")


def cleanup_models(*args: Any, **kwargs: Any) -> None:
    _delegate("cleanup_models")


# -- interrupts -------------------------------------------------------------------------------------------------------
def interrupt_current_processing(value: bool = True) -> None:
    """Interrupt the job of the calling node. `value=False` is accepted and ignored: interrupts are per job and a
    new job starts clear, and letting a node clear its own job's flag would swallow a user's interrupt."""
    ctx = current_context()
    if value and ctx is not None:
        ctx.job.control.interrupt()


def processing_interrupted() -> bool:
    ctx = current_context()
    return bool(ctx is not None and ctx.interrupted)


def throw_exception_if_processing_interrupted() -> None:
    ctx = current_context()
    if ctx is not None:
        ctx.check_interrupt()
