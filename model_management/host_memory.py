"""The one probe of host memory (RAM): total and available bytes, for budgets, tile sizes, the RAM-pressure
output cache and /system_stats. Linux's MemAvailable (what can be had without swapping) when /proc/meminfo is
there; otherwise the POSIX page counts, which every platform Python runs the server on provides."""
from __future__ import annotations

import os
from typing import Optional


def _meminfo(field: str) -> Optional[int]:
    """One /proc/meminfo field in bytes (read up to it: the RAM cache asks after every node output), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024  # the file states kB
    except OSError:
        pass
    return None


def total_bytes() -> int:
    found = _meminfo("MemTotal")
    return found if found is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_bytes() -> int:
    found = _meminfo("MemAvailable")
    return found if found is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
