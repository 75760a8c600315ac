"""Host allocator settings for a process that runs networks on the CPU, applied once at server start.

Every step of a CPU forward allocates and frees activations of tens to hundreds of megabytes. glibc hands such
blocks out as fresh memory maps and returns them on free, so each step pays the kernel's page faults again (costly
in a VM), and loading a checkpoint faults in every page of its weights 4 KiB at a time. Two settings avoid most of it:

- `THP_MEM_ALLOC_ENABLE=1`: torch's CPU allocator asks for transparent huge pages (2 MiB) for large tensors, so a
  fault maps 512 times more memory. It is read when torch allocates its first tensor, so it must be set before
  torch is imported; a value the user set is kept.
- glibc's `mallopt`: a fixed mmap threshold at its maximum (32 MiB; a fixed value also stops glibc from raising
  it on its own) and a high trim threshold, so blocks below 32 MiB are reused from the heap instead of being
  mapped and unmapped at every step.

Measured in bench/host_allocator.py (figures in bench/RESULTS.md "Issue 15").
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD_BYTES = 256 << 20


def configure_host_allocator(environ=None) -> dict:
    """Apply both settings (before torch is imported); returns what was applied, for the start log."""
    environ = os.environ if environ is None else environ
    applied = {}
    if "torch" not in sys.modules:
        environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    applied["THP_MEM_ALLOC_ENABLE"] = environ.get("THP_MEM_ALLOC_ENABLE", "0")
    applied["mallopt"] = _mallopt()
    return applied


def _mallopt() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
