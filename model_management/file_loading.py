"""Reading weight files safely.

`.safetensors` is read by memory map (tensors are paged in as they are used, not copied up front). Pickle-based
formats (`.ckpt`, `.pt`, `.pth`, `.bin`) go only through `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers -- a file that tries to run code is refused, never executed. Every failure becomes a
`ModelFileError` that names the file and says what is wrong with it.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from typing import Any, Dict, Optional, Tuple

import torch

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


def load_state_dict(path: str, device: str = "cpu", with_metadata: bool = False) -> Any:
    """All tensors of a weight file as a dict (and the safetensors metadata, when asked)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: file not found")
    lower = path.lower()
    metadata: Optional[dict] = None
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        header = read_safetensors_header(path)
        _check_safetensors_complete(path, header)
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(path, device=device)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{_name(path)}: not a valid safetensors file: {exc}")
        metadata = header.get("__metadata__") or {}
    elif lower.endswith(PICKLE_EXTENSIONS):
        state = _load_pickle(path, device)
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
