"""Reading weight files safely.

`.safetensors` is read tensor by tensor with plain reads (no memory map held: a mapped file's pages would count
in the process's memory until the map is closed), each tensor converted to the dtype its model part computes in as
soon as it is read, so the load peak stays near the final resident size (one tensor above it), never the file plus
its converted copy. Pickle-based formats (`.ckpt`, `.pt`, `.pth`, `.bin`) go only through `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers -- a file that tries to run code is refused, never executed. Every failure becomes a
`ModelFileError` that names the file and says what is wrong with it.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from typing import Any, Callable, Dict, Optional, Tuple

import torch

# `dtype_for(key, stored dtype)`: the dtype to keep a tensor in (its own to keep it as stored), or SKIP to not read it
DtypeFor = Callable[[str, torch.dtype], Any]
SKIP = "skip"
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
    "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pt2", ".pkl")


class ModelFileError(Exception):
    """A weight file that cannot be used; the message names the file and the problem."""


class RefusedPickleError(ModelFileError, pickle.UnpicklingError):
    """A pickle holding more than plain tensors: refused, never executed."""


def _name(path: str) -> str:
    return os.path.basename(path)


def read_safetensors_header(path: str) -> dict:
    """The JSON header of a safetensors file (tensor table and `__metadata__`), read without loading tensors."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ModelFileError(f"{_name(path)}: file too short to be a safetensors file")
            (length,) = struct.unpack("<Q", head)
            size = os.fstat(f.fileno()).st_size
            if length > min(size - 8, 100 * 1024 * 1024):
                raise ModelFileError(f"{_name(path)}: corrupted safetensors header (declares {length} bytes)")
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(f"{_name(path)}: unreadable safetensors header: {exc}")
    if not isinstance(header, dict):
        raise ModelFileError(f"{_name(path)}: corrupted safetensors header")
    return header


def read_safetensors_metadata(path: str) -> dict:
    meta = read_safetensors_header(path).get("__metadata__") or {}
    return meta if isinstance(meta, dict) else {}


def _check_safetensors_complete(path: str, header: dict) -> None:
    """Truncated files are the common corruption (an interrupted download): compare the declared data size."""
    ends = [entry["data_offsets"][1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry]
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        size = os.fstat(f.fileno()).st_size
    needed = 8 + length + (max(ends) if ends else 0)
    if size < needed:
        raise ModelFileError(f"{_name(path)}: the file is truncated ({size} bytes of {needed}); "
                             f"re-download it")


def _read_safetensors(path: str, header: dict, dtype_for: Optional[DtypeFor]) -> Dict[str, torch.Tensor]:
    """The file's tensors, read in file order, each converted as soon as it is read."""
    entries = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if isinstance(entry, dict) and entry.get("dtype") not in SAFETENSORS_DTYPES:
            raise ModelFileError(f"{_name(path)}: tensor {key} has the dtype {entry.get('dtype')!r}, which this "
                                 f"loader does not read (it reads {', '.join(SAFETENSORS_DTYPES)})")
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            start, end = (int(v) for v in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{_name(path)}: corrupted safetensors header (entry {key!r}: {entry!r})")
        target = dtype_for(key, dtype) if dtype_for is not None else dtype
        if target != SKIP:
            entries.append((start, end, key, dtype, shape, target))
    state: Dict[str, torch.Tensor] = {}
    # tensors kept as stored are read straight into their own buffer; tensors to convert go through one staging
    # buffer reused for all of them (no per-tensor scratch: no page faults for it, no heap holes left behind)
    converting = [end - start for start, end, _, dtype, _, target in entries
                  if target is not None and target != dtype and dtype.is_floating_point]
    staging = torch.empty(max(converting), dtype=torch.uint8) if converting else None
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        base = 8 + length
        for start, end, key, dtype, shape, target in sorted(entries, key=lambda e: e[0]):
            size = end - start
            expected = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            if size != expected:
                raise ModelFileError(f"{_name(path)}: corrupted safetensors header ({key} declares {size} "
                                     f"bytes for shape {shape} {entry_name(dtype)})")
            convert = target is not None and target != dtype and dtype.is_floating_point
            tensor = torch.empty(shape, dtype=dtype) if not convert else None
            raw = staging[:size] if convert else tensor.view(-1).view(torch.uint8)
            if size:
                f.seek(base + start)
                if f.readinto(memoryview(raw.numpy())) != size:
                    raise ModelFileError(f"{_name(path)}: the file is truncated at {key}; re-download it")
            if convert:
                tensor = raw.view(dtype).view(shape).to(target)
            state[key] = tensor
            del raw
    return state


def entry_name(dtype: torch.dtype) -> str:
    return next((name for name, d in SAFETENSORS_DTYPES.items() if d == dtype), str(dtype))


def convert_state(state: Dict[str, torch.Tensor], dtype_for: Optional[DtypeFor]) -> Dict[str, torch.Tensor]:
    """Apply `dtype_for` to a state dict in place, one tensor at a time (each old copy freed as it goes)."""
    if dtype_for is None:
        return state
    for key in list(state):
        value = state[key]
        if not torch.is_tensor(value):
            continue
        target = dtype_for(key, value.dtype)
        if target == SKIP:
            del state[key]
        elif target is not None and target != value.dtype and value.is_floating_point():
            state[key] = value.to(target)
            del value
    return state


def load_state_dict(path: str, device: str = "cpu", with_metadata: bool = False,
                    dtype_for: Optional[DtypeFor] = None) -> Any:
    """All tensors of a weight file as a dict (and the safetensors metadata, when asked). `dtype_for` picks each
    tensor's dtype (or SKIP) as it is read."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: file not found")
    lower = path.lower()
    metadata: Optional[dict] = None
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        header = read_safetensors_header(path)
        _check_safetensors_complete(path, header)
        try:
            state = _read_safetensors(path, header, dtype_for)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{_name(path)}: not a valid safetensors file: {exc}")
        if str(device) != "cpu":
            state = {k: v.to(device) for k, v in state.items()}
        metadata = header.get("__metadata__") or {}
    elif lower.endswith(PICKLE_EXTENSIONS):
        state = convert_state(_load_pickle(path, device), dtype_for)
    else:
        raise ModelFileError(f"{_name(path)}: unknown weight file type (expected .safetensors, .ckpt, .pt, .pth "
                             f"or .bin)")
    return (state, metadata or {}) if with_metadata else state


def _load_pickle(path: str, device: str) -> Dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RefusedPickleError(
            f"{_name(path)}: refused: the file holds Python objects other than tensors, and loading it could run "
            f"code. Only plain weights are loaded; convert it to .safetensors if you trust it. ({exc})")
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{_name(path)}: not a readable weight file (corrupted or truncated?): {exc}")
    return unwrap_state_dict(loaded, path)


def unwrap_state_dict(loaded: Any, path: str = "") -> Dict[str, torch.Tensor]:
    """Training checkpoints nest the weights under "state_dict" (or a single key); return the flat dict."""
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if isinstance(loaded, dict) and len(loaded) == 1:
        only = next(iter(loaded.values()))
        if isinstance(only, dict) and only and all(isinstance(v, torch.Tensor) for v in only.values()):
            loaded = only
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{_name(path)}: expected a dict of tensors, found {type(loaded).__name__}")
    return loaded


def split_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix)}


def file_size_and_mtime(path: str) -> Tuple[int, float]:
    st = os.stat(path)
    return st.st_size, st.st_mtime
