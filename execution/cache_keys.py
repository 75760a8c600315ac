"""Cache keys: a node's input signature.

A key digests the node's class, its literal inputs, the keys (and slots) of everything it links to, and its change
fingerprint (IS_CHANGED). Node ids are not part of it -- so two identical sub-graphs under different ids share one
result -- except for nodes that are not idempotent or that read their own id (UNIQUE_ID), which must stay apart.
Keys are computed iteratively, so chains thousands of nodes deep are fine.
"""
from __future__ import annotations

import hashlib
import math
import uuid
from typing import Any, Callable, Dict, Optional

from graph.catalogue import Catalogue
from graph.node_spec import HIDDEN
from graph.prompt import link_parts

# A fingerprint that never matches anything: for nodes whose IS_CHANGED failed or returned NaN.
def never_equal() -> str:
    return "always-rerun:" + uuid.uuid4().hex


def fingerprint_token(value: Any) -> Any:
    """Normalise an IS_CHANGED result: NaN (or an object equal to nothing) means "re-run every time"."""
    if isinstance(value, float) and math.isnan(value):
        return never_equal()
    try:
        if value != value:  # objects that are not equal to themselves never match a cache entry
            return never_equal()
    except Exception:
        return never_equal()
    return value


class KeyComputer:
    """Keys for the nodes of one job's graph (the prompt plus nodes added by expansion)."""

    def __init__(self, graph: Any, catalogue: Catalogue,
                 fingerprint: Optional[Callable[[str], Any]] = None) -> None:
        self.graph = graph
        self.catalogue = catalogue
        self.fingerprint = fingerprint
        self.keys: Dict[str, str] = {}
        self._identity_classes: Dict[str, bool] = {}

    def _keeps_identity(self, class_type: str) -> bool:
        known = self._identity_classes.get(class_type)
        if known is None:
            spec = self.catalogue.get(class_type)
            known = bool(spec and (spec.not_idempotent or any(
                i.section == HIDDEN and i.type == "UNIQUE_ID" for i in spec.current_inputs())))
            self._identity_classes[class_type] = known
        return known

    def key(self, node_id: str) -> str:
        known = self.keys.get(node_id)
        if known is not None:
            return known
        # iterative post-order over upstream nodes that have no key yet
        stack = [node_id]
        on_stack = {node_id}
        while stack:
            current = stack[-1]
            if current in self.keys:
                on_stack.discard(stack.pop())
                continue
            # One source at a time, so the stack is always a path: a source already on it closes a cycle (rejected
            # by validation; its key falls back to the link text). Pushing all missing sources at once would let a
            # node shared by two of them be skipped as "on the stack" and digested before its key existed.
            missing = next((src for src in self._sources(current) if src not in self.keys and src not in on_stack),
                           None)
            if missing is not None:
                stack.append(missing)
                on_stack.add(missing)
                continue
            on_stack.discard(stack.pop())
            self.keys[current] = self._digest(current)
        return self.keys[node_id]

    def _sources(self, node_id: str) -> list:
        node = self.graph.get_node(node_id)
        out = []
        for value in node["inputs"].values():
            if isinstance(value, list):
                link = link_parts(value)
                if link is not None and self.graph.has_node(link[0]):
                    out.append(link[0])
        return out

    def _digest(self, node_id: str) -> str:
        node = self.graph.get_node(node_id)
        class_type = node["class_type"]
        parts = [class_type]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            link = link_parts(value) if isinstance(value, list) else None
            if link is not None and link[0] in self.keys:
                parts.append(f"{name}=@{self.keys[link[0]]}:{link[1]}")
            else:
                parts.append(f"{name}={value!r}")
        if self._keeps_identity(class_type):
            parts.append(f"#id={node_id}")
        if self.fingerprint is not None:
            token = self.fingerprint(node_id)
            if token is not None:
                parts.append(f"#changed={token!r}")
        return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
