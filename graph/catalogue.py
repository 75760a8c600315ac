"""The node catalogue: every node class the engine knows, by class name.

Built once per engine from the built-in nodes plus any loaded packs; /object_info is rendered from it on demand so
folder listings in combos are always current.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Iterable, Iterator, Optional

from graph.node_spec import NodeSpec

log = logging.getLogger("tessera.catalogue")


class Catalogue:
    def __init__(self, specs: Iterable[NodeSpec] = ()) -> None:
        self._specs: Dict[str, NodeSpec] = {}
        self.display_names: Dict[str, str] = {}
        self.describe_errors: Dict[str, str] = {}  # class -> why its /object_info entry could not be made
        for spec in specs:
            self.add(spec)

    def add(self, spec: NodeSpec, replace: bool = True) -> None:
        if not replace and spec.name in self._specs:
            raise ValueError(f"node class {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def get(self, name: Any) -> Optional[NodeSpec]:
        return self._specs.get(name) if isinstance(name, str) else None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[NodeSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list:
        return list(self._specs)

    def object_info(self, services: Any = None, only: Optional[str] = None) -> dict:
        """`{class_name: entry}` in the shape of docs/architecture.md §4.2 (all classes, or just `only`)."""
        names = [only] if only is not None else list(self._specs)
        info = {}
        for name in names:
            spec = self._specs.get(name)
            if spec is None:
                continue
            try:
                entry = spec.to_catalogue(services)
                if name in self.display_names:
                    entry["display_name"] = self.display_names[name]
                json.dumps(entry)  # an entry the client cannot read is as broken as one that raised
            except Exception as exc:  # a pack's INPUT_TYPES raised or returned garbage: leave that node out
                reason = f"{type(exc).__name__}: {exc}"
                if self.describe_errors.get(name) != reason:
                    log.error("node %s left out of /object_info: %s", name, reason)
                self.describe_errors[name] = reason
                continue
            self.describe_errors.pop(name, None)
            info[name] = entry
        return info
