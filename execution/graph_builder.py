"""GraphBuilder: how a node describes the sub-graph it expands into.

A node that returns `{"result": (...), "expand": builder.finalize()}` is replaced at run time by the nodes it built;
`result` holds values or links (`node.out(i)`) into that sub-graph.

Id scheme: every builder owns a namespace `"<root>.<call>.<n>."`. The scheduler opens an `ExpansionScope` (the
expanding node's id and the index of the call within a list-mapped run) before each call, through a context
variable, so concurrent async nodes each number their own builders; `n` counts the builders made in that scope.
The public names (GraphBuilder, Node and their methods) are the contract node packs program against.
"""
from __future__ import annotations

import contextvars
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional

from graph.prompt import is_link

__all__ = ["GraphBuilder", "Node", "ExpansionScope", "is_link"]


@dataclass
class ExpansionScope:
    """Where builders made during one node call take their namespaces from."""
    root: str = ""
    call_index: int = 0
    builders: Iterator[int] = field(default_factory=itertools.count)

    def namespace(self, builder_index: int) -> str:
        return f"{self.root}.{self.call_index}.{builder_index}."


_scope: contextvars.ContextVar[Optional[ExpansionScope]] = contextvars.ContextVar("tessera_expansion_scope",
                                                                                  default=None)


def _current_scope() -> ExpansionScope:
    scope = _scope.get()
    if scope is None:  # a builder made outside any node call (scripts, tests)
        scope = ExpansionScope()
        _scope.set(scope)
    return scope


class Node:
    """One node of an expansion: its full id, class and inputs (values or `[id, index]` links)."""

    def __init__(self, id: str, class_type: str, inputs: dict):
        self.id = id
        self.class_type = class_type
        self.inputs = dict(inputs)
        self.override_display_id: Optional[str] = None

    def out(self, index: int) -> list:
        """A link to output `index` of this node, for another node's input or the expansion's result."""
        return [self.id, index]

    def set_input(self, key: str, value: Any) -> None:
        """Set an input; None removes it (an optional input left unconnected)."""
        if value is None:
            self.inputs.pop(key, None)
            return
        self.inputs[key] = value

    def get_input(self, key: str) -> Any:
        return self.inputs.get(key)

    def set_override_display_id(self, override_display_id: str) -> None:
        """Report this node's progress and errors as those of another (visible) node."""
        self.override_display_id = override_display_id

    def links_to(self, source_id: str, index: int) -> list:
        """Names of the inputs fed by output `index` of node `source_id`."""
        return [name for name, value in self.inputs.items() if is_link(value) and list(value[:2]) == [source_id, index]]

    def serialize(self) -> dict:
        entry: Dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            entry["override_display_id"] = self.override_display_id
        return entry


class GraphBuilder:
    """Collects the nodes of one expansion under one id namespace."""

    def __init__(self, prefix: Optional[str] = None):
        self.prefix = self.alloc_prefix() if prefix is None else prefix
        self.nodes: Dict[str, Node] = {}
        self._local_ids = itertools.count(1)

    # -- namespaces ---------------------------------------------------------------------------------------------
    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        """Open the scope the next builders take their namespaces from (the engine calls this per node call)."""
        _scope.set(ExpansionScope(str(prefix_root), int(call_index), itertools.count(int(graph_index))))

    @classmethod
    def alloc_prefix(cls, root: Optional[str] = None, call_index: Optional[int] = None,
                     graph_index: Optional[int] = None) -> str:
        """A namespace in the current scope; arguments given replace that part (an explicit graph_index does not
        use up a number of the scope)."""
        scope = _current_scope()
        builder_index = next(scope.builders) if graph_index is None else graph_index
        return ExpansionScope(scope.root if root is None else root,
                              scope.call_index if call_index is None else call_index).namespace(builder_index)

    # -- nodes --------------------------------------------------------------------------------------------------
    def _full_id(self, local_id: str) -> str:
        return f"{self.prefix}{local_id}"

    def node(self, class_type: str, id: Optional[str] = None, **kwargs: Any) -> Node:
        """Add a node (or return the one already under that id); `kwargs` are its inputs."""
        full_id = self._full_id(str(next(self._local_ids)) if id is None else id)
        if full_id not in self.nodes:
            self.nodes[full_id] = Node(full_id, class_type, kwargs)
        return self.nodes[full_id]

    def lookup_node(self, id: str) -> Optional[Node]:
        return self.nodes.get(self._full_id(id))

    def remove_node(self, id: str) -> None:
        self.nodes.pop(self._full_id(id), None)

    def replace_node_output(self, node_id: str, index: int, new_value: Any) -> None:
        """Point every input fed by output `index` of `node_id` at `new_value` (None disconnects them)."""
        source = self._full_id(node_id)
        for node in self.nodes.values():
            for name in node.links_to(source, index):
                node.set_input(name, new_value)

    def finalize(self) -> dict:
        """The expansion in API prompt form: {full id: {"class_type", "inputs"[, "override_display_id"]}}."""
        return {full_id: node.serialize() for full_id, node in self.nodes.items()}
