"""The one probe of host memory (RAM): total and available bytes, for budgets, tile sizes, the RAM-pressure
output cache and /system_stats. Linux's MemAvailable (what can be had without swapping) when /proc/meminfo is
there; otherwise the POSIX page counts, which every platform Python runs the server on provides."""
from __future__ import annotations

import os
from typing import Dict


def _meminfo() -> Dict[str, int]:
    """The fields of /proc/meminfo in bytes; empty where the file does not exist."""
    fields: Dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    except OSError:
        pass
    return fields


def total_bytes() -> int:
    return _meminfo().get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_bytes() -> int:
    found = _meminfo().get("MemAvailable")
    return found if found is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
