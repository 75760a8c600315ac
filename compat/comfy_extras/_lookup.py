"""Module `__getattr__` for the comfy_extras modules: built-in node classes by name."""
from __future__ import annotations

from typing import Any


def node_class(name: str) -> Any:
    from compat import comfy_nodes
    if name.startswith("_"):
        raise AttributeError(name)
    return comfy_nodes.lookup(name)
