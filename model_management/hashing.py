"""Model file hashes as users know them: the full sha256 and the 10-hex-digit "AutoV2" short form.

Hashing a multi-gigabyte checkpoint takes seconds, so results are cached in a small JSON file keyed by path, size
and modification time: a file is hashed once, and again only when it changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Dict, Optional


def sha256_of_file(path: str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def autov2(sha256_hex: str) -> str:
    """The short hash shown by A1111-style tools and model sites: the first 10 hex digits of the sha256."""
    return sha256_hex[:10]


class HashCache:
    """sha256 per file, remembered across runs in `cache_path` (JSON)."""

    def __init__(self, cache_path: Optional[str] = None) -> None:
        self.cache_path = cache_path
        self._lock = threading.Lock()
        self._entries: Dict[str, dict] = {}
        if cache_path and os.path.isfile(cache_path):
            try:
                with open(cache_path, encoding="utf-8") as f:
                    loaded = json.load(f)
                if isinstance(loaded, dict):
                    self._entries = loaded
            except (OSError, ValueError):
                self._entries = {}
        self.computed = 0  # how many files were actually read (the rest came from the cache)

    def sha256(self, path: str) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        with self._lock:
            entry = self._entries.get(real)
            if entry and entry.get("size") == st.st_size and entry.get("mtime") == st.st_mtime:
                return entry["sha256"]
        value = sha256_of_file(real)
        with self._lock:
            self.computed += 1
            self._entries[real] = {"size": st.st_size, "mtime": st.st_mtime, "sha256": value}
            self._save()
        return value

    def autov2(self, path: str) -> str:
        return autov2(self.sha256(path))

    def _save(self) -> None:
        if not self.cache_path:
            return
        tmp = self.cache_path + ".tmp"
        try:
            os.makedirs(os.path.dirname(self.cache_path) or ".", exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._entries, f)
            os.replace(tmp, self.cache_path)
        except OSError:
            pass
