"""Output caches: which node results survive from one job to the next (docs/architecture.md §4.4).

Entries are keyed by input signature (execution/cache_keys.py). Policies:
  classic        keep what the latest job used, drop the rest
  lru(N)         keep what any of the last N jobs used
  ram(headroom)  keep everything while available RAM stays above the headroom; under pressure evict the entries
                 with the largest age x size first
  none           keep nothing between jobs (a job still shares identical sub-graphs within itself)
Model weights are not owned here: the model manager keeps them (§6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Optional


@dataclass
class CachedOutput:
    values: list  # per output slot, the list of items (list mapping)
    ui: Optional[dict] = None
    size: int = -1  # bytes, estimated lazily (RAM-pressure policy)
    last_used: int = 0  # job generation


def estimate_size(obj: Any, _depth: int = 0) -> int:
    """Bytes held by tensors and arrays inside `obj` (other objects count a nominal 64 bytes)."""
    if _depth > 8:
        return 64
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        try:
            return int(obj.element_size() * obj.nelement())
        except Exception:
            return 64
    if isinstance(obj, (list, tuple)):
        return 64 + sum(estimate_size(x, _depth + 1) for x in obj)
    if isinstance(obj, dict):
        return 64 + sum(estimate_size(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (str, bytes)):
        return 49 + len(obj)
    return 64


class OutputCache:
    """Base policy: a dict with job bookkeeping. Subclasses decide what `end_job` keeps."""

    policy = "base"

    def __init__(self) -> None:
        self.entries: Dict[str, CachedOutput] = {}
        self.generation = 0

    def begin_job(self) -> None:
        self.generation += 1

    def get(self, key: str) -> Optional[CachedOutput]:
        entry = self.entries.get(key)
        if entry is not None:
            entry.last_used = self.generation
        return entry

    def put(self, key: str, entry: CachedOutput) -> None:
        entry.last_used = self.generation
        self.entries[key] = entry

    def end_job(self, used_keys: Iterable[str]) -> None:
        pass

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries


class ClassicCache(OutputCache):
    policy = "classic"

    def end_job(self, used_keys: Iterable[str]) -> None:
        used = set(used_keys)
        for key in [k for k in self.entries if k not in used]:
            del self.entries[key]


class LRUCache(OutputCache):
    policy = "lru"

    def __init__(self, max_jobs: int) -> None:
        super().__init__()
        if max_jobs < 1:
            raise ValueError("LRU cache size must be at least 1 job")
        self.max_jobs = max_jobs

    def end_job(self, used_keys: Iterable[str]) -> None:
        for key in used_keys:
            entry = self.entries.get(key)
            if entry is not None:
                entry.last_used = self.generation
        oldest_kept = self.generation - self.max_jobs + 1
        for key in [k for k, e in self.entries.items() if e.last_used < oldest_kept]:
            del self.entries[key]


class RamPressureCache(OutputCache):
    policy = "ram"

    def __init__(self, headroom_gb: float, available_ram: Callable[[], int]) -> None:
        """`available_ram()`: free host bytes now (the server passes model_management.host_memory's probe; the
        scheduler layer knows no machine details)."""
        super().__init__()
        self.headroom = int(headroom_gb * (1 << 30))
        self.available_ram = available_ram

    def put(self, key: str, entry: CachedOutput) -> None:
        super().put(key, entry)
        self.relieve()

    def end_job(self, used_keys: Iterable[str]) -> None:
        self.relieve()

    def relieve(self) -> None:
        """Evict largest age x size first until the estimated bytes freed cover the RAM deficit."""
        deficit = self.headroom - self.available_ram()
        if deficit <= 0 or not self.entries:
            return
        for entry in self.entries.values():
            if entry.size < 0:
                entry.size = estimate_size(entry.values) + estimate_size(entry.ui)
        def weight(item: tuple) -> float:
            return (self.generation - item[1].last_used + 1) * item[1].size
        freed = 0
        for key, entry in sorted(self.entries.items(), key=weight, reverse=True):
            del self.entries[key]
            freed += entry.size
            if freed >= deficit:
                break


class NoCache(OutputCache):
    policy = "none"

    def get(self, key: str) -> Optional[CachedOutput]:
        return None

    def put(self, key: str, entry: CachedOutput) -> None:
        pass


def make_cache(policy: str = "classic", lru_size: int = 0, ram_headroom_gb: float = 4.0,
               available_ram: Optional[Callable[[], int]] = None) -> OutputCache:
    if policy == "classic":
        return ClassicCache()
    if policy == "lru":
        return LRUCache(lru_size)
    if policy == "ram":
        if available_ram is None:
            raise ValueError("the ram cache policy needs a probe of available memory (available_ram)")
        return RamPressureCache(ram_headroom_gb, available_ram)
    if policy == "none":
        return NoCache()
    raise ValueError(f"unknown cache policy {policy!r} (classic, lru, ram, none)")
