"""Compatibility layer: the module names ComfyUI custom node packs import, implemented over Tessera's engine.

`install(services, catalogue)` binds the running engine (compat/_runtime.py) and appends this folder to sys.path, so
`import folder_paths`, `import comfy.utils`, `from comfy_execution.graph_utils import GraphBuilder`,
`from comfy_api.latest import ComfyAPI` ... resolve to the thin modules here. `import nodes` resolves to our own
`nodes` package, whose module `__getattr__` delegates ComfyUI's names to compat/comfy_nodes.py; likewise
`import execution` gives our package, which then serves `PromptExecutor` (compat/prompt_executor.py).

Inside this folder, modules refer to each other by their top-level names (as packs do) and to the holder as
`compat._runtime`, never `_runtime`, so there is exactly one copy of the bound state.
"""
from __future__ import annotations

import os
import sys
from typing import Any

COMPAT_DIR = os.path.dirname(os.path.abspath(__file__))


def install(services: Any, catalogue: Any = None) -> None:
    """Bind `services` (and the node `catalogue`) for the compat modules and make them importable. Idempotent;
    calling it again re-binds (the latest engine wins, as these APIs are process-global)."""
    import execution
    import nodes
    from compat import _runtime, comfy_nodes, prompt_executor

    _runtime.bind(services, catalogue)
    nodes.__getattr__ = comfy_nodes.package_getattr  # `nodes.X` for packs (see nodes/__init__.py)
    execution.__getattr__ = prompt_executor.package_getattr  # `execution.PromptExecutor`
    if COMPAT_DIR not in sys.path:
        sys.path.append(COMPAT_DIR)


def installed() -> bool:
    from compat import _runtime

    return _runtime.state.services is not None and COMPAT_DIR in sys.path
