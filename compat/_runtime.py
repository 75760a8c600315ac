"""The one holder of global state for the compat layer.

ComfyUI's module APIs (`folder_paths`, `nodes.NODE_CLASS_MAPPINGS`, ...) are global by nature: a pack calls them at
import time, long before any node runs, with no context to pass. `compat.install()` binds the running engine's
Services and catalogue here; every compat module reads them from here and nowhere else, so re-binding (a new server,
a new test) switches all of them at once.
"""
from __future__ import annotations

from typing import Any, Dict, Optional


class _State:
    __slots__ = ("services", "catalogue", "wrappers", "class_mappings", "display_mappings", "fallback_catalogue",
                 "extension_web_dirs")

    def __init__(self) -> None:
        self.services: Any = None
        self.catalogue: Any = None
        self.wrappers: Dict[str, tuple] = {}  # class name -> (spec, generated V1 wrapper class)
        self.class_mappings: Optional[dict] = None  # the dict `nodes.NODE_CLASS_MAPPINGS` hands out
        self.display_mappings: Optional[dict] = None
        self.fallback_catalogue: Any = None  # built-in catalogue used when nothing is bound
        self.extension_web_dirs: Dict[str, str] = {}  # `nodes.EXTENSION_WEB_DIRS`: pack name -> its web folder


state = _State()


def bind(services: Any, catalogue: Any = None) -> None:
    """Point the compat modules at `services` (and `catalogue`); caches tied to an old catalogue are dropped."""
    if catalogue is not state.catalogue:
        state.wrappers = {}
        state.class_mappings = None
        state.display_mappings = None
        state.extension_web_dirs = {}
    state.services = services
    state.catalogue = catalogue


def unbind() -> None:
    bind(None, None)


def services() -> Any:
    if state.services is None:
        raise RuntimeError("the ComfyUI compatibility layer is not installed: call compat.install(services) first")
    return state.services


def paths() -> Any:
    return services().paths


def catalogue() -> Any:
    """The bound catalogue, or None."""
    return state.catalogue
