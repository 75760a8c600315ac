"""Host allocator settings for a process that runs networks on the CPU, applied once at server start.

Every step of a CPU forward allocates and frees activations of a few to tens of megabytes. glibc hands blocks
above its mmap threshold out as fresh memory maps and unmaps them on free, so each step pays the kernel's page
faults again (costly in a VM: ~460,000 faults per SD1.5 UNet forward at 256x256). glibc's `mallopt` with a fixed
mmap threshold at its maximum (32 MiB; a fixed value also stops glibc from moving it on its own) and a high trim
threshold makes such blocks come from the heap and be reused: no faults after the first step, the forward 0.78x
the time (bench/host_allocator.py, bench/RESULTS.md "Issue 15").

Transparent huge pages for torch's allocations (`THP_MEM_ALLOC_ENABLE=1`, read when torch allocates its first
tensor) were measured too and are not set: with the mallopt settings they gained nothing more (0.82x) and a
huge page counts in full however little of it is used. A value the user sets is left as it is.
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
    """Apply the settings (at start, before the first large allocation); returns what is in force, for the log."""
    environ = os.environ if environ is None else environ
    return {"mallopt": _mallopt(), "THP_MEM_ALLOC_ENABLE": environ.get("THP_MEM_ALLOC_ENABLE", "0")}


def _glibc_function(name: str):
    """glibc's `name` (None off Linux or with another C library: musl has no mallopt or malloc_trim)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _mallopt() -> bool:
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's `malloc_trim`). With the trim threshold above, free
    heap memory is kept for reuse; after a phase that reallocated many weight-sized blocks in a new order
    (model_management/packed_convolutions.py), the holes it left would otherwise stay resident. The next
    forward faults its activation pages in once more."""
    trim = _glibc_function("malloc_trim")
    return trim is not None and bool(trim(ctypes.c_size_t(0)))
