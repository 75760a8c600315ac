"""Model residency: loaded weights are owned here, kept in RAM within a budget, most recently used first.

Loader nodes ask `ModelResidency` for a file; it reads the file only when the weights are not already resident, so
two workflows that share a checkpoint never reload it, and switching among checkpoints that fit the budget never
re-reads a file. The MODEL, CLIP and VAE objects it returns hold `ResidentModule` handles, not the modules: the
output cache may keep those objects as long as it likes, and evicting a model here really frees its memory (a later
use loads it again, transparently). ControlNets, T2I-adapters, control-LoRA weights and upscale models go through
`load_module`, so they share the same budget and eviction order.

The compute device is the layer above: `devices` (model_management.device_loading.DeviceLoader) keeps device copies
of the networks as an MRU set within the VRAM budget. Evicting a file here unloads its device copies first.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import torch

from diffusion.handles import ResidentModule

log = logging.getLogger("tessera.models")


def module_bytes(module: Any) -> int:
    return parts_bytes({"module": module})


def _tensors(part: Any) -> Iterator[torch.Tensor]:
    """The tensors a part holds: a module's parameters and buffers, a state dict's values; other parts (metadata
    objects riding along with a network, e.g. a spandrel descriptor) hold none of their own."""
    if isinstance(part, torch.nn.Module) or (callable(getattr(part, "parameters", None))
                                             and callable(getattr(part, "buffers", None))):
        yield from part.parameters()
        yield from part.buffers()
    elif isinstance(part, Mapping):
        yield from (value for value in part.values() if torch.is_tensor(value))


def parts_bytes(parts: Mapping[str, Any]) -> int:
    """Host bytes of a file's parts, every tensor counted once however many parts share it; a network streamed
    from its file (host_streaming.py) counts what it holds at most, not the file."""
    seen, total = set(), 0
    for part in parts.values():
        streamed = [m for m in part.modules() if getattr(m, "host_stream", None) is not None] \
            if isinstance(part, torch.nn.Module) else []
        for module in streamed:  # counted by what they hold, their tensors not one by one
            total += module.host_stream.resident_bytes()
            seen.update(id(t) for t in _tensors(module))
        for tensor in _tensors(part):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class Resident:
    parts: Dict[str, Any]  # "unet" / "vae" / "clip" / "module" ... -> torch module (or state dict, metadata)
    load: Callable[[], Dict[str, Any]]  # how to read them again after eviction
    info: Dict[str, Any] = field(default_factory=dict)
    bytes: int = 0  # host bytes, measured when read (device copies and patches in place do not change it)
    last_used: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.bytes = parts_bytes(self.parts)


class ModelResidency:
    def __init__(self, ram_budget_bytes: Optional[int] = None, devices: Any = None,
                 keep_alive: Optional[float] = None) -> None:
        from model_management.device_loading import DeviceLoader
        self.budget = ram_budget_bytes
        self.keep_alive = keep_alive  # seconds a file (and its device copies) stays loaded unused; None: forever
        self.devices = devices if devices is not None else DeviceLoader()  # inactive on a plain CPU
        self.entries: "OrderedDict[tuple, Resident]" = OrderedDict()
        self.file_reads = 0
        self._loaders: Dict[tuple, Callable[[], Dict[str, Any]]] = {}
        self._lock = threading.RLock()

    def preload_code(self, modules) -> None:
        """Import the networks' code ahead of the first load (transformers' CLIP alone takes seconds), under the
        manager's lock: a load that starts meanwhile waits for it instead of racing transformers' lazy imports.
        A module that fails to import is left for the load that needs it to report."""
        import importlib
        with self._lock:
            for name in modules:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - optional warm-up
                    log.debug("preloading %s failed: %s", name, exc)

    # -- bookkeeping -----------------------------------------------------------------------------------------
    @staticmethod
    def _key(kind: str, paths: Tuple[str, ...], options: tuple) -> tuple:
        stamps = []
        for path in paths:
            st = os.stat(path)
            stamps.append((os.path.realpath(path), st.st_size, st.st_mtime))
        return (kind, tuple(stamps), options)

    @property
    def precision(self) -> Any:
        """The dtype of each model part (model_management.precision_policy), the compute device's."""
        from model_management.precision_policy import policy_of
        return policy_of(self.devices)

    @property
    def device(self) -> Any:
        """The compute device (what `comfy.model_management.get_torch_device()` answers)."""
        return self.devices.device

    def resident_paths(self) -> list:
        """The real paths of the model files loaded now (a scale-out worker reports them for routing)."""
        with self._lock:
            return sorted({str(stamp[0]) for key in self.entries for stamp in key[1]})

    def resident_bytes(self) -> int:
        return sum(entry.bytes for entry in self.entries.values())

    def _drop(self, key: tuple) -> Resident:
        entry = self.entries.pop(key)
        for module in entry.parts.values():
            self.devices.unload(module)
        return entry

    def _enforce_budget(self, keep: tuple) -> None:
        if self.budget is None:
            return
        while self.resident_bytes() > self.budget:
            victim = next((k for k in self.entries if k != keep), None)
            if victim is None:
                return
            self._drop(victim)

    def _entry(self, key: tuple, load: Callable[[], Dict[str, Any]]) -> Resident:
        with self._lock:
            entry = self.entries.get(key)
            if entry is None:
                self.file_reads += 1
                started = time.monotonic()
                entry = Resident(load(), load)
                log.info("loaded %s %s in %.2f s", key[0], ", ".join(os.path.basename(str(stamp[0])) for stamp in key[1]),
                         time.monotonic() - started)
                self.entries[key] = entry
            self.entries.move_to_end(key)
            entry.last_used = time.monotonic()
            self._enforce_budget(key)
            return entry

    def module(self, key: tuple, part: str) -> Any:
        with self._lock:
            entry = self.entries.get(key)
            if entry is None:  # evicted since the handle was made: read the file again
                loader = self._loaders[key]
                entry = self._entry(key, loader)
            else:
                self.entries.move_to_end(key)
                entry.last_used = time.monotonic()
            return entry.parts[part]

    def expire_idle(self, now: Optional[float] = None) -> int:
        """Keep-alive: unload every file (with its device copies) unused for longer than `keep_alive` seconds.
        Called between jobs; returns the host bytes freed."""
        if self.keep_alive is None:
            return 0
        now = time.monotonic() if now is None else now
        freed = 0
        with self._lock:
            for key in [k for k, e in self.entries.items() if now - e.last_used > self.keep_alive]:
                freed += self._drop(key).bytes
        return freed

    def unload_all(self) -> None:
        """Drop every device copy and every resident file (`/free` with unload_models)."""
        with self._lock:
            self.devices.unload_all()
            self.entries.clear()

    def unload_devices(self) -> int:
        """Drop every device copy; the weights stay resident in RAM. Returns the device bytes freed."""
        with self._lock:
            return self.devices.unload_all(include_in_use=False)

    def free_memory(self, memory_required: int, device: Any = None, keep_loaded: Any = ()) -> int:
        """Free `memory_required` bytes of `device`: device copies of the least recently used networks when the
        loader is active, else (the CPU is the device) resident files. Returns the bytes freed."""
        keep_modules, keep_keys = [], set()
        for model in keep_loaded or ():
            for attr in ("_unet", "_stack", "_vae"):
                handle = getattr(model, attr, None)
                if isinstance(handle, ResidentModule):
                    keep_keys.add(handle.key)
                    keep_modules.append(handle.get())
        with self._lock:
            if self.devices.active:
                return self.devices.free(memory_required, keep=tuple(keep_modules))
            freed = 0
            for key in list(self.entries):
                if freed >= memory_required:
                    break
                if key in keep_keys:
                    continue
                freed += self._drop(key).bytes
            return freed

    # the names V1 packs call through comfy.model_management
    def unload_all_models(self) -> None:
        self.unload_all()

    def load_models_gpu(self, models: Any, memory_required: int = 0, *args: Any, **kwargs: Any) -> None:
        """Make these models resident (read again if evicted) and place them on the compute device, most recently
        used; `memory_required` is kept free besides them for activations."""
        for model in models or ():
            make_resident = getattr(model, "make_resident", None)
            if callable(make_resident):
                make_resident(int(memory_required or 0))

    # -- loading ---------------------------------------------------------------------------------------------
    def _remember(self, key: tuple, load: Callable[[], Dict[str, Any]]) -> Resident:
        self._loaders[key] = load
        return self._entry(key, load)

    def load_checkpoint(self, path: str, prediction: Optional[str] = None, embeddings=None):
        from model_management.checkpoints import LoadedCheckpoint, load_checkpoint
        from model_management.model_objects import DiffusionModel, TextEncoderModel, VAEModel
        precision = self.precision
        key = self._key("checkpoint", (path,), (prediction, precision))
        holder: Dict[str, Any] = {}

        stream = self._checkpoint_too_large(path, precision)

        def load() -> Dict[str, Any]:
            window = None
            if stream:
                others = sum(e.bytes for k, e in self.entries.items() if k != key)
                window = self.budget - others - self._checkpoint_parts_bytes(path, precision)[1]
            loaded = load_checkpoint(path, prediction=prediction, embeddings=embeddings, precision=precision,
                                     stream_window=window)
            if stream:
                self._log_streaming(path, loaded.model.unet.host_stream)
            holder["loaded"] = loaded
            parts = {"unet": loaded.model.unet, "vae": loaded.vae.vae}
            if loaded.clip is not None:  # files without text encoders (SD3 ones) give no CLIP
                parts["clip"] = loaded.clip.stack
            return parts

        entry = self._remember(key, load)
        if "loaded" in holder:
            entry.info.update(family=holder["loaded"].family, leftovers=holder["loaded"].leftovers)
        family = entry.info["family"]
        model = DiffusionModel(ResidentModule(self, key, "unet"), family, path)
        clip = TextEncoderModel(ResidentModule(self, key, "clip"), family.name, path) \
            if "clip" in entry.parts else None
        vae = VAEModel(ResidentModule(self, key, "vae"), path)
        return LoadedCheckpoint(model, clip, vae, family, entry.info.get("leftovers", []))

    def load_vae(self, path: str):
        from model_management.checkpoints import load_vae_file
        from model_management.model_objects import VAEModel
        dtype = self.precision.vae
        key = self._key("vae", (path,), (dtype,))
        self._remember(key, lambda: {"vae": load_vae_file(path, dtype).vae})
        return VAEModel(ResidentModule(self, key, "vae"), path)

    def load_unet(self, path: str, storage: Any = None):
        """A bare UNet file in the policy's dtype; `storage` (an fp8 dtype, UNETLoader's weight_dtype): keep the
        layers' weights in it instead, cast per layer to the policy's dtype at forward time."""
        from model_management.checkpoints import load_unet_file
        from model_management.model_objects import DiffusionModel
        from model_management.weight_casting import store_in
        compute = self.precision.unet
        key = self._key("unet", (path,), (compute, storage))
        holder: Dict[str, Any] = {}
        def load_mapped() -> Dict[str, Any]:
            from model_management.checkpoints import load_unet_mapped
            window = self.budget - sum(e.bytes for k, e in self.entries.items() if k != key)
            model = load_unet_mapped(path, compute, window, storage)
            self._log_streaming(path, model.unet.host_stream)
            holder["family"] = model.family
            return {"unet": model.unet}

        def load() -> Dict[str, Any]:
            # read straight into the storage dtype: the load never holds the compute-dtype copy (every UNet
            # parameter belongs to a layer store_in casts, so nothing is rounded through fp8 and back)
            model = load_unet_file(path, storage or compute)
            if storage is not None:
                store_in(model.unet, storage, compute)
            holder["family"] = model.family
            return {"unet": model.unet}

        entry = self._remember(key, load_mapped if self._too_large(path, storage or compute) else load)
        if "family" in holder:
            entry.info["family"] = holder["family"]
        return DiffusionModel(ResidentModule(self, key, "unet"), entry.info["family"], path)

    def _t5_too_large(self, paths: list, kind: str, dtype: torch.dtype) -> Optional[str]:
        """The T5-XXL file of an SD3 / Flux encoder set that is larger than the whole RAM budget, if any: it runs
        from its memory-mapped file."""
        from model_management.mapped_weights import header_keys, mappable, stored_bytes
        if self.budget is None or kind not in ("sd3", "flux"):
            return None
        for path in paths:
            if mappable(path) and stored_bytes(path, lambda d: dtype) > self.budget and \
                    any("encoder.block." in k for k in header_keys(path)):
                return path
        return None

    def _log_streaming(self, path: str, stream: Any, what: str = "diffusion model") -> None:
        log.info("%s: %.1f GB of %s does not fit the RAM budget of %.1f GB: streaming %.1f GB of it "
                 "from the file, %.1f GB held", os.path.basename(path), 
                 (stream.kept_bytes + stream.streamed_bytes + stream.owned_bytes) / 1e9, what, self.budget / 1e9,
                 stream.streamed_bytes / 1e9, stream.resident_bytes() / 1e9)

    def _checkpoint_parts_bytes(self, path: str, precision: Any) -> tuple:
        """(diffusion model bytes, every other part's bytes) of a single-file checkpoint in their dtypes, from the
        header alone (EMA copies are never read)."""
        from model_management.mapped_weights import stored_bytes
        unet_prefix = "model.diffusion_model."
        unet = stored_bytes(path, lambda d: precision.unet, include=lambda k: k.startswith(unet_prefix))
        rest = stored_bytes(path, lambda d: precision.text_encoder,
                            include=lambda k: not k.startswith((unet_prefix, "model_ema.")))
        return unet, rest

    def _checkpoint_too_large(self, path: str, precision: Any) -> bool:
        """Whether a single-file checkpoint's diffusion model alone is larger than the whole RAM budget (the rule
        of bare files): then it runs from the memory-mapped file, and the text encoders and VAE are read as usual."""
        from model_management.mapped_weights import mappable
        if self.budget is None or os.path.isdir(path) or not mappable(path):
            return False
        return self._checkpoint_parts_bytes(path, precision)[0] > self.budget

    def _too_large(self, path: str, dtype: torch.dtype) -> bool:
        """Whether a diffusion-model file, held in `dtype`, is larger than the whole RAM budget: then it runs from
        its memory-mapped file (a file that cannot be mapped is read as usual)."""
        from model_management.mapped_weights import mappable, stored_bytes
        if self.budget is None or not mappable(path):
            return False
        return stored_bytes(path, lambda stored: dtype) > self.budget

    def load_text_encoders(self, paths: list, kind: str, embeddings=None):
        from model_management.model_objects import TextEncoderModel
        from model_management.text_encoder_files import load_text_encoder_files
        dtype = self.precision.text_encoder
        key = self._key("clip", tuple(paths), (kind, dtype))
        holder: Dict[str, Any] = {}

        streamed = self._t5_too_large(paths, kind, dtype)

        def load() -> Dict[str, Any]:
            stream = None
            if streamed is not None:
                from model_management.mapped_weights import stored_bytes
                others = sum(e.bytes for k, e in self.entries.items() if k != key)
                rest = sum(stored_bytes(p, lambda d: dtype) for p in paths if p != streamed)
                stream = (streamed, self.budget - others - rest)
            model = load_text_encoder_files(paths, kind, embeddings, dtype, stream_t5=stream)
            if streamed is not None:
                self._log_streaming(streamed, model.stack.encoder("t5xxl").model.host_stream, "text encoder")
            holder["family"] = model.family_name
            return {"clip": model.stack}

        entry = self._remember(key, load)
        if "family" in holder:
            entry.info["family"] = holder["family"]
        return TextEncoderModel(ResidentModule(self, key, "clip"), entry.info["family"], ";".join(paths))

    def load_module(self, kind: str, path: str, build: Callable[[], Any], options: tuple = (),
                    part: str = "module") -> ResidentModule:
        """Any other network read from one file (ControlNets, adapters, upscale models), budgeted and evicted like
        a checkpoint. `build()` reads the file and returns a torch module (stored as part "module") or a dict of
        parts (modules and state dicts are counted; other values are metadata kept alongside); it is called again
        when the handle is used after eviction. `options` (hashable) tell apart different builds of one file.
        Returns the handle to `part`."""
        key = self._key(kind, (path,), tuple(options))

        def load() -> Dict[str, Any]:
            built = build()
            parts = dict(built) if isinstance(built, dict) else {"module": built}
            if part not in parts:
                raise ValueError(f"loading {os.path.basename(path)} as {kind} gave no {part!r} part "
                                 f"(parts: {sorted(parts)})")
            return parts

        self._remember(key, load)
        return ResidentModule(self, key, part)


def default_ram_budget() -> int:
    """Half of the machine's memory for resident weights (the rest for activations and everything else)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 << 30

