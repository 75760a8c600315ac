"""Handles to networks the model manager owns: a holder keeps a handle, not the network, so eviction can free the
memory and the next use loads the file again. Kept apart from the manager itself (residency.py) so the model
objects that hold handles need not import the manager that builds them."""
from __future__ import annotations

from typing import Any


class ResidentModule:
    """A handle to one network of a resident file; `get()` returns it, loading the file again if evicted.
    `residency` is the manager (anything with `module(key, part)`)."""

    def __init__(self, residency: Any, key: tuple, part: str) -> None:
        self.residency, self.key, self.part = residency, key, part

    def get(self) -> Any:
        return self.residency.module(self.key, self.part)

    def sibling(self, part: str) -> "ResidentModule":
        """A handle to another part of the same file."""
        return ResidentModule(self.residency, self.key, part)


def resolve(module_or_handle: Any) -> Any:
    """The network itself, whether given directly or by handle."""
    return module_or_handle.get() if isinstance(module_or_handle, ResidentModule) else module_or_handle
