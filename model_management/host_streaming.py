"""Host streaming: a network larger than the RAM budget runs from its memory-mapped file, layer by layer.

The device loader (device_loading.py) streams the layers that do not fit in VRAM from host memory; this is the same
idea one level down, for host memory itself. The network's weights are views of the mapped file
(mapped_weights.py). In module order, the layers that fit the window keep their pages once touched; every later
layer is *streamed*: as it starts, read-ahead for the layers after it is requested (the kernel reads the file while
this one computes), and once its forward returned its pages are handed back. So the process holds the window, the
layers converted on reading, and about one streamed layer at a time, whatever the file's size; the OS page cache
keeps what it can of the rest, and a file larger than the machine's memory is re-read from disk each model call.

Handing pages back is a memory hint, never a matter of correctness: any tensor touched at any other time (a layer a
parent reads directly, a pack reading weights) just maps its pages in again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch

from model_management.mapped_weights import MappedFile

PREFETCH_BYTES = 128 << 20  # how far ahead of the running layer the kernel is asked to read


@dataclass
class StreamUnit:
    """One module's own mapped tensors."""
    name: str
    module: torch.nn.Module
    spans: List[Tuple[int, int]]
    bytes: int


def _own_tensors(module: torch.nn.Module) -> List[torch.Tensor]:
    """A module's own parameters and buffers (the objects themselves: their ids stay valid while counting)."""
    own = [p for p in module._parameters.values() if p is not None]
    return own + [b for b in module._buffers.values() if b is not None]


class HostStream:
    """The window and the streamed layers of one network over its mapped file."""

    def __init__(self, root: torch.nn.Module, mapping: MappedFile, window_bytes: int) -> None:
        """`window_bytes`: what the network may hold in the process, its owned tensors included."""
        self.mapping = mapping  # referenced here so that the map lives as long as the network
        self.window_bytes = max(0, int(window_bytes))
        self.kept: List[StreamUnit] = []
        self.streamed: List[StreamUnit] = []
        self.owned_bytes = 0  # tensors not in the map (converted on reading, derived): ordinary memory
        self.forwards = 0  # streamed layer forwards so far (statistics, tests)
        self._hooks: list = []
        self._prefetched_upto = -1  # the last streamed layer read-ahead was requested for
        self._last_started = -1
        seen, units = set(), []
        for name, module in root.named_modules():
            spans = []
            for tensor in _own_tensors(module):
                if id(tensor) in seen:  # a tied tensor belongs to its first module
                    continue
                seen.add(id(tensor))
                span = mapping.span(tensor)
                if span is None:
                    self.owned_bytes += tensor.numel() * tensor.element_size()
                else:
                    spans.append(span)
            if spans:
                units.append(StreamUnit(name, module, spans, sum(end - start for start, end in spans)))
        largest = max((unit.bytes for unit in units), default=0)
        room = self.window_bytes - self.owned_bytes - largest  # owned tensors, and one streamed layer
        for unit in units:  # in module order: the first layers that fit are kept, every later one is streamed
            if not self.streamed and unit.bytes <= room:
                self.kept.append(unit)
                room -= unit.bytes
            else:
                self.streamed.append(unit)
        for index, unit in enumerate(self.streamed):
            self._hooks.append(unit.module.register_forward_pre_hook(lambda m, a, i=index: self._starting(i)))
            self._hooks.append(unit.module.register_forward_hook(lambda m, a, o, i=index: self._finished(i),
                                                                 always_call=True))

    @property
    def kept_bytes(self) -> int:
        return sum(u.bytes for u in self.kept)

    @property
    def streamed_bytes(self) -> int:
        return sum(u.bytes for u in self.streamed)

    def resident_bytes(self) -> int:
        """What the network holds in the process at most: owned tensors, the window, the largest streamed layer."""
        return self.owned_bytes + self.kept_bytes + max((u.bytes for u in self.streamed), default=0)

    def _starting(self, index: int) -> None:
        """Keep the read-ahead about PREFETCH_BYTES in front of the running layer."""
        if index > self._prefetched_upto or index < self._last_started:  # a new pass, or a jump: from here on
            self._prefetched_upto = index
        self._last_started = index
        if self._prefetched_upto - index > 1:
            return  # still ahead enough
        spans, ahead, last = [], 0, self._prefetched_upto
        while last + 1 < len(self.streamed) and ahead < PREFETCH_BYTES:
            last += 1
            ahead += self.streamed[last].bytes
            spans.extend(self.streamed[last].spans)
        if spans:
            self.mapping.prefetch(spans)
            self._prefetched_upto = last

    def _finished(self, index: int) -> None:
        self.forwards += 1
        self.mapping.release(self.streamed[index].spans)

    def release_all(self) -> None:
        """Hand back every streamed layer's pages (after a run, or before measuring)."""
        self.mapping.release(span for unit in self.streamed for span in unit.spans)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def report(self) -> dict:
        return {"file": self.mapping.path, "window_bytes": self.window_bytes, "kept_bytes": self.kept_bytes,
                "streamed_bytes": self.streamed_bytes, "owned_bytes": self.owned_bytes,
                "streamed_layers": len(self.streamed), "released_bytes": self.mapping.released_bytes}


def host_stream_of(module: object) -> "HostStream | None":
    return getattr(module, "host_stream", None)


def stream_from_file(root: torch.nn.Module, mapping: MappedFile, window_bytes: int) -> HostStream:
    """Install host streaming on `root`, whose weights are views of `mapping`; `root.host_stream` tells it."""
    stream = HostStream(root, mapping, window_bytes)
    root.host_stream = stream
    return stream
