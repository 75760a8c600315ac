"""Weights left in their file: a safetensors file memory-mapped, its tensors views into the map.

A model larger than the RAM budget (Flux-dev is 24 GB in bf16) is not read into memory at all: each tensor is a view
of a private (copy-on-write) map of the file, so its pages come from the OS page cache when a layer first touches
them, and `release` hands them back once the layer has run (host_streaming.py decides when). The map is private:
nothing Tessera or a pack does can write to the file, and a tensor written in place (none of Tessera's patchers do
that; they swap tensors) would become the process's own memory -- until released, when it would read the file's
values again, which is why only layers whose forward has just finished are released.

Only tensors whose stored dtype is kept are mapped; anything converted on reading is an ordinary tensor.
"""
from __future__ import annotations

import mmap
import os
from typing import Dict, Iterable, Optional, Tuple

import torch

from model_management.file_loading import (SAFETENSORS_DTYPES, SAFETENSORS_EXTENSIONS, ModelFileError,
                                            check_safetensors_complete, read_safetensors_header)
from model_management import scaled_fp8

PAGE = mmap.PAGESIZE


def mappable(path: str) -> bool:
    """Whether `path` can be left in its file: a plain safetensors file (ComfyUI's fp8 scaled files need their
    weights dequantized, so they are read)."""
    if not path.lower().endswith(SAFETENSORS_EXTENSIONS) or not os.path.isfile(path):
        return False
    return not scaled_fp8.is_scaled(read_safetensors_header(path))


def header_keys(path: str) -> list:
    return [k for k in read_safetensors_header(path) if k != "__metadata__"]


def stored_bytes(path: str, dtype_of=None, include=None) -> int:
    """Bytes of a safetensors file's tensors (those whose key `include` accepts), each in `dtype_of(stored
    dtype)` (default: as stored), from the header alone."""
    total = 0
    for key, entry in read_safetensors_header(path).items():
        if key == "__metadata__" or not isinstance(entry, dict) or (include is not None and not include(key)):
            continue
        stored = SAFETENSORS_DTYPES.get(entry.get("dtype"))
        if stored is None:
            continue
        dtype = dtype_of(stored) if dtype_of is not None and stored.is_floating_point else stored
        total += torch.Size(entry["shape"]).numel() * torch.empty((), dtype=dtype).element_size()
    return total


class MappedFile:
    """A private map of one safetensors file: tensors by key, and the OS hints for their pages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.header = read_safetensors_header(path)
        check_safetensors_complete(path, self.header)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        self.size = len(self._map)
        self._bytes = torch.frombuffer(self._map, dtype=torch.uint8)  # the whole map, for views and addresses
        self.base = self._bytes.data_ptr()
        self.data_start = 8 + int.from_bytes(self._map[:8], "little")
        self.released_bytes = 0  # statistics: bytes handed back so far
        self.prefetched_bytes = 0

    def keys(self) -> Iterable[str]:
        return (k for k in self.header if k != "__metadata__")

    @property
    def metadata(self) -> dict:
        meta = self.header.get("__metadata__") or {}
        return meta if isinstance(meta, dict) else {}

    def tensor(self, key: str) -> torch.Tensor:
        entry = self.header[key]
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            start, end = (int(v) for v in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{os.path.basename(self.path)}: corrupted safetensors header (entry {key!r})")
        if torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size() != end - start:
            raise ModelFileError(f"{os.path.basename(self.path)}: corrupted safetensors header ({key} declares "
                                 f"{end - start} bytes for shape {shape})")
        offset = self.data_start + start
        if dtype == torch.bool or end == start:  # nothing to share (and bool has no uint8 view): a copy
            return self._bytes[offset:offset + (end - start)].clone().view(dtype).view(shape)
        if offset % torch.empty((), dtype=dtype).element_size():  # unaligned: a view would be misaligned
            return self._bytes[offset:offset + (end - start)].clone().view(dtype).view(shape)
        return self._bytes[offset:offset + (end - start)].view(dtype).view(shape)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {key: self.tensor(key) for key in self.keys()}

    def span(self, tensor: torch.Tensor) -> Optional[Tuple[int, int]]:
        """The byte range of the map a tensor's storage occupies, or None when it is not in the map."""
        if tensor.device.type != "cpu" or tensor.numel() == 0:
            return None
        start = tensor.data_ptr() - self.base
        end = start + tensor.numel() * tensor.element_size()
        return (start, end) if 0 <= start and end <= self.size else None

    def _advise(self, option: int, spans: Iterable[Tuple[int, int]], inward: bool) -> int:
        done = 0
        for start, end in spans:
            if inward:  # only pages wholly inside: a neighbour's tensor may share the edge pages
                first, last = -(-start // PAGE) * PAGE, end // PAGE * PAGE
            else:
                first, last = start // PAGE * PAGE, min(self.size, -(-end // PAGE) * PAGE)
            if last > first:
                self._map.madvise(option, first, last - first)
                done += last - first
        return done

    def release(self, spans: Iterable[Tuple[int, int]]) -> None:
        """Hand these pages back to the OS (they stay in its page cache while memory allows; touching them again
        maps them in again)."""
        self.released_bytes += self._advise(mmap.MADV_DONTNEED, spans, inward=True)

    def prefetch(self, spans: Iterable[Tuple[int, int]]) -> None:
        """Ask the OS to start reading these pages now (read-ahead while the layers before them compute)."""
        self.prefetched_bytes += self._advise(mmap.MADV_WILLNEED, spans, inward=False)
