"""GraphBuilder: how a node describes the sub-graph it expands into.

A node that returns `{"result": (...), "expand": builder.finalize()}` is replaced at run time by the nodes it built;
`result` holds values or links (`node.out(i)`) into that sub-graph. Ids are prefixed so that expansions never collide
with the prompt or with each other: the engine sets the default prefix (node id, call index) before each call,
through a context variable, so concurrent async nodes each see their own.
"""
from __future__ import annotations

import contextvars
from typing import Any, Dict, Optional

from graph.prompt import is_link

__all__ = ["GraphBuilder", "Node", "is_link"]

# (root, call_index, next graph_index) for builders created without an explicit prefix
_default_prefix: contextvars.ContextVar = contextvars.ContextVar("tessera_graph_prefix", default=None)


class GraphBuilder:
    def __init__(self, prefix: Optional[str] = None):
        self.prefix = prefix if prefix is not None else self.alloc_prefix()
        self.nodes: Dict[str, "Node"] = {}
        self.id_gen = 1

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        _default_prefix.set([prefix_root, call_index, graph_index])

    @classmethod
    def alloc_prefix(cls, root: Optional[str] = None, call_index: Optional[int] = None,
                     graph_index: Optional[int] = None) -> str:
        state = _default_prefix.get()
        if state is None:
            state = ["", 0, 0]
            _default_prefix.set(state)
        if root is None:
            root = state[0]
        if call_index is None:
            call_index = state[1]
        if graph_index is None:
            graph_index = state[2]
            state[2] += 1
        return f"{root}.{call_index}.{graph_index}."

    def node(self, class_type: str, id: Optional[str] = None, **kwargs: Any) -> "Node":
        if id is None:
            id = str(self.id_gen)
            self.id_gen += 1
        id = self.prefix + id
        existing = self.nodes.get(id)
        if existing is not None:
            return existing
        node = Node(id, class_type, kwargs)
        self.nodes[id] = node
        return node

    def lookup_node(self, id: str) -> Optional["Node"]:
        return self.nodes.get(self.prefix + id)

    def finalize(self) -> dict:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        node_id = self.prefix + node_id
        to_remove = []
        for node in self.nodes.values():
            for key, value in node.inputs.items():
                if is_link(value) and value[0] == node_id and value[1] == index:
                    if new_value is None:
                        to_remove.append((node, key))
                    else:
                        node.inputs[key] = new_value
        for node, key in to_remove:
            del node.inputs[key]

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self.prefix + id, None)


class Node:
    def __init__(self, id: str, class_type: str, inputs: dict):
        self.id = id
        self.class_type = class_type
        self.inputs = dict(inputs)
        self.override_display_id: Optional[str] = None

    def out(self, index: int) -> list:
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(key, None)
        else:
            self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        self.override_display_id = override_display_id

    def serialize(self) -> dict:
        out = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            out["override_display_id"] = self.override_display_id
        return out
