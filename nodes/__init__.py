"""Built-in nodes, one module per domain. `builtin_specs()` collects them for the catalogue."""
from __future__ import annotations

from typing import List

from graph.node_spec import NodeSpec


def builtin_specs() -> List[NodeSpec]:
    from nodes import arithmetic, image_basic, preview_any, primitives
    specs = []
    for module in (primitives, arithmetic, image_basic, preview_any):
        specs.extend(cls.SPEC for cls in module.NODES)
    return specs


def builtin_catalogue():
    from graph.catalogue import Catalogue
    return Catalogue(builtin_specs())
