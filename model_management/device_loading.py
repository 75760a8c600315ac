"""Weights on the compute device: an MRU set of loaded models with a byte ledger, partial loading and streaming.

`DeviceLoader.load(module)` makes a network ready to run on the device. The unit of placement is a module's own
parameters and buffers (`recurse=False`): a leaf layer, mostly. When the model does not fit, least recently used
models give up units one by one until it does, and only as far as needed. When it still does not fit, the units that
fit are loaded and the rest are *streamed*: a forward pre-hook copies the unit's weights to the device right before
it runs (on CUDA from pinned host memory, non-blocking, on a side stream the compute stream waits for) and a forward
hook drops them again. Unloading puts back the very tensors the module held before (bit-exact, same storage).

Only standard layers, whose weights are read by their own forward, are streamed; any other unit (embeddings looked
up by index, layers whose weights a parent reads directly -- the caller names those with `keep_resident`) is always
loaded. Patches (LoRA) are applied after `load`, on whatever each unit holds: the device copy of a loaded unit, the host
staging tensor of a streamed one (a streamed forward copies in whatever the unit holds at that moment, so a patcher
may write in place or swap in new tensors); `synchronize()` before restoring them.

On a plain CPU the loader is inactive: `load` and `use` cost nothing and copy nothing.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch

from model_management.devices import ComputeDevice, VRAMMode

HOST, LOADED, STREAMED = "host", "loaded", "streamed"
STREAMABLE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.GroupNorm,
              torch.nn.LayerNorm)
KeepResident = Callable[[str, torch.nn.Module], bool]


def _put(module: torch.nn.Module, kind: str, key: str, value: torch.Tensor) -> None:
    if kind == "p":
        module._parameters[key].data = value  # the Parameter object stays: patches and references still hold
    else:
        module._buffers[key] = value


class Unit:
    """One module's own tensors: the host originals, and what the module holds now."""

    def __init__(self, name: str, module: torch.nn.Module, tensors: List[Tuple[str, str, torch.Tensor]],
                 dtype: Optional[torch.dtype], streamable: bool) -> None:
        self.name, self.module, self.tensors, self.streamable = name, module, tensors, streamable
        self.dtypes = [dtype if dtype is not None and t.is_floating_point() else t.dtype for _, _, t in tensors]
        self.bytes = sum(t.numel() * torch.empty((), dtype=d).element_size() for (_, _, t), d in
                         zip(tensors, self.dtypes))
        self.state = HOST
        self.staging: List[torch.Tensor] = []  # what a streamed unit holds between forwards (before patches)
        self.outside: List[List[torch.Tensor]] = []  # what it held before each streaming forward now running
        self.hooks: list = []
        self.streams = 0  # forwards that streamed this unit in

    def hold(self, values: List[torch.Tensor]) -> None:
        for (kind, key, _), value in zip(self.tensors, values):
            _put(self.module, kind, key, value)

    def held(self) -> List[torch.Tensor]:
        return [self.module._parameters[key].data if kind == "p" else self.module._buffers[key]
                for kind, key, _ in self.tensors]

    def host(self) -> List[torch.Tensor]:
        return [t for _, _, t in self.tensors]


class Record:
    """A network the loader knows: its units in module order, and how many users are running it now."""

    def __init__(self, root: torch.nn.Module, units: List[Unit], dtype: Optional[torch.dtype]) -> None:
        self.root, self.units, self.dtype = root, units, dtype
        self.in_use = 0

    def bytes_in(self, state: str) -> int:
        return sum(u.bytes for u in self.units if u.state == state)

    def names_in(self, state: str) -> List[str]:
        return [u.name for u in self.units if u.state == state]


class DeviceLoader:
    def __init__(self, device: Optional[ComputeDevice] = None) -> None:
        self.compute = device or ComputeDevice.cpu()
        self.records: "OrderedDict[int, Record]" = OrderedDict()  # least recently used first
        self.streamed_bytes = 0  # bytes copied by streaming hooks so far (statistics, tests)
        self._lock = threading.RLock()
        self._copy_stream = None

    @property
    def device(self) -> torch.device:
        return self.compute.device

    @property
    def mode(self) -> VRAMMode:
        return self.compute.mode

    @property
    def active(self) -> bool:
        return self.compute.active

    def held_bytes(self) -> int:
        """Bytes of weights loaded on the device (the ledger; streamed copies are transient)."""
        return sum(r.bytes_in(LOADED) for r in self.records.values())

    def free_bytes(self) -> int:
        return self.compute.free_bytes(self.held_bytes())

    def record(self, module: torch.nn.Module) -> Optional[Record]:
        return self.records.get(id(module))

    # -- placing ----------------------------------------------------------------------------------------------------
    def load(self, module: torch.nn.Module, dtype: Optional[torch.dtype] = None, extra_bytes: int = 0,
             keep_resident: Optional[KeepResident] = None) -> Optional[Record]:
        """Make `module` ready to run on the device (most recently used now); None when the loader is inactive.
        `extra_bytes`: room to leave free for activations besides the device's own inference reserve."""
        if not self.active:
            return None
        with self._lock:
            rec = self.records.get(id(module))
            if rec is not None and rec.dtype != dtype and rec.in_use == 0:
                self.unload(module)
                rec = None
            if rec is None:
                rec = Record(module, self._units(module, dtype, keep_resident), dtype)
                self.records[id(module)] = rec
            self.records.move_to_end(id(module))
            if rec.in_use == 0:
                self._place(rec, max(extra_bytes, self.compute.inference_bytes))
            return rec

    @contextlib.contextmanager
    def use(self, module: torch.nn.Module, dtype: Optional[torch.dtype] = None, extra_bytes: int = 0,
            keep_resident: Optional[KeepResident] = None) -> Iterator[torch.nn.Module]:
        """`load`, and keep the module from being evicted until the block ends."""
        rec = self.load(module, dtype, extra_bytes, keep_resident)
        if rec is None:
            yield module
            return
        rec.in_use += 1
        try:
            yield module
        finally:
            rec.in_use -= 1

    def _units(self, root: torch.nn.Module, dtype: Optional[torch.dtype],
               keep_resident: Optional[KeepResident]) -> List[Unit]:
        units, seen = [], set()
        for name, module in root.named_modules():
            tensors = []
            for kind, items in (("p", module._parameters), ("b", module._buffers)):
                for key, tensor in items.items():
                    if tensor is None or id(tensor) in seen:  # a tied tensor belongs to its first module
                        continue
                    seen.add(id(tensor))
                    tensors.append((kind, key, tensor.data if kind == "p" else tensor))
            if tensors:
                streamable = isinstance(module, STREAMABLE) and not (keep_resident and keep_resident(name, module))
                units.append(Unit(name, module, tensors, dtype, streamable))
        return units

    def _place(self, rec: Record, extra: int) -> None:
        mode = self.mode
        pending = [u for u in rec.units if u.state != LOADED]
        if not pending:
            return
        must = [u for u in pending if not u.streamable]
        optional = [u for u in pending if u.streamable]
        must_bytes, optional_bytes = sum(u.bytes for u in must), sum(u.bytes for u in optional)
        if mode is VRAMMode.NO:
            room = 0
        elif mode is VRAMMode.LOW:
            room = max(0, self.compute.usable_bytes() // 2 - rec.bytes_in(LOADED) - must_bytes)
        else:
            room = optional_bytes
        wanted = must_bytes + min(room, optional_bytes) + extra
        free = self.free_bytes()
        if wanted > free:
            self._evict(wanted - free, protect=rec)
            free = self.free_bytes()
        available = free - extra
        for unit in must:
            self._load_unit(unit, rec.dtype)
            available -= unit.bytes
        for unit in optional:
            if mode is VRAMMode.HIGH or (unit.bytes <= available and unit.bytes <= room):
                self._load_unit(unit, rec.dtype)
                available -= unit.bytes
                room -= unit.bytes
            elif unit.state != STREAMED:
                self._stream_unit(unit)

    def _evict(self, needed: int, protect: Optional[Record] = None, keep: tuple = ()) -> int:
        """Drop device copies of the least recently used models, unit by unit, until `needed` bytes are free.
        Models in use, `protect` and the modules in `keep` are spared."""
        freed = 0
        for rec in list(self.records.values()):
            if freed >= needed:
                break
            if rec is protect or rec.in_use or any(rec.root is k for k in keep):
                continue
            for unit in reversed(rec.units):  # the last units placed go first
                if freed >= needed:
                    break
                if unit.state == LOADED:
                    freed += unit.bytes
                    self._to_host(unit)
        if freed:
            self.compute.empty_cache()
        return freed

    # -- unit states ----------------------------------------------------------------------------------------------
    def _copy(self, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor: patches may write it later
            if self.device.type == "cpu":
                return tensor.to(dtype=dtype, copy=True)  # simulated device: a real, separate copy
            return tensor.to(self.device, dtype, non_blocking=tensor.is_pinned())

    def _load_unit(self, unit: Unit, dtype: Optional[torch.dtype]) -> None:
        self._unhook(unit)
        unit.hold([self._copy(t, d) for t, d in zip(unit.host(), unit.dtypes)])
        unit.staging = []
        unit.state = LOADED

    def _to_host(self, unit: Unit) -> None:
        self._unhook(unit)
        unit.hold(unit.host())
        unit.staging = []
        unit.state = HOST

    def _stream_unit(self, unit: Unit) -> None:
        """Keep the weights on the host, in the compute dtype (pinned on CUDA), and copy them in per forward."""
        self._unhook(unit)
        staging = []
        with torch.inference_mode(False), torch.no_grad():
            for tensor, dtype in zip(unit.host(), unit.dtypes):
                stage = tensor if tensor.dtype == dtype else tensor.to(dtype)
                if self.device.type == "cuda":
                    try:
                        stage = stage.pin_memory()
                    except RuntimeError:  # pinned memory is limited; pageable memory still works, only slower
                        pass
                staging.append(stage)
        unit.staging = staging
        unit.hold(staging)
        unit.hooks = [unit.module.register_forward_pre_hook(lambda m, args, u=unit: self._stream_in(u)),
                      unit.module.register_forward_hook(lambda m, args, out, u=unit: self._stream_out(u),
                                                        always_call=True)]
        unit.state = STREAMED

    def _unhook(self, unit: Unit) -> None:
        for hook in unit.hooks:
            hook.remove()
        unit.hooks = []

    def _stream_in(self, unit: Unit) -> None:
        """Copy in what the unit holds now: its staging tensors, or what a patch put in their place."""
        self.streamed_bytes += unit.bytes
        unit.streams += 1
        outside = unit.held()
        unit.outside.append(outside)
        if self.device.type != "cuda":
            unit.hold([self._copy(t, t.dtype) for t in outside])
            return
        compute = torch.cuda.current_stream(self.device)
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        self._copy_stream.wait_stream(compute)  # the memory it allocates may just have been freed by compute
        with torch.cuda.stream(self._copy_stream), torch.inference_mode(False), torch.no_grad():
            copies = [t.to(self.device, non_blocking=t.is_pinned()) for t in outside]
        compute.wait_stream(self._copy_stream)
        for copy in copies:
            copy.record_stream(compute)  # freed only after the compute stream is done with it
        unit.hold(copies)

    def _stream_out(self, unit: Unit) -> None:
        if unit.outside:
            unit.hold(unit.outside.pop())

    def synchronize(self) -> None:
        """Wait for streaming copies in flight (before staging memory is written, e.g. restoring patches)."""
        if self._copy_stream is not None:
            self._copy_stream.synchronize()

    # -- unloading --------------------------------------------------------------------------------------------------
    def unload(self, module: torch.nn.Module) -> int:
        """Forget `module`: every unit holds its original host tensors again. Returns the device bytes freed."""
        with self._lock:
            rec = self.records.pop(id(module), None)
            if rec is None:
                return 0
            freed = rec.bytes_in(LOADED)
            self.synchronize()
            for unit in rec.units:
                self._to_host(unit)
            return freed

    def unload_all(self, include_in_use: bool = True) -> int:
        with self._lock:
            freed = sum(self.unload(r.root) for r in list(self.records.values()) if include_in_use or not r.in_use)
        self.compute.empty_cache()
        return freed

    def free(self, needed: int, keep: tuple = ()) -> int:
        """Evict least recently used device copies (unit by unit) until `needed` bytes were released."""
        with self._lock:
            return self._evict(needed, keep=tuple(keep))

    # -- reporting --------------------------------------------------------------------------------------------------
    def report(self) -> Dict[str, object]:
        return {"device": str(self.device), "mode": self.mode.value, "held_bytes": self.held_bytes(),
                "models": [{"class": type(r.root).__name__, "loaded_bytes": r.bytes_in(LOADED),
                            "streamed_bytes": r.bytes_in(STREAMED), "in_use": r.in_use}
                           for r in reversed(self.records.values())]}
