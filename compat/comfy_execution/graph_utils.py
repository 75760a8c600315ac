"""`comfy_execution.graph_utils`: GraphBuilder for node expansion -- the engine's own class, so a pack's expansion
ids get the per-node, per-call prefix the scheduler sets before each call."""
from __future__ import annotations

from typing import Any

from execution.graph_builder import GraphBuilder, Node, is_link

__all__ = ["GraphBuilder", "Node", "is_link", "add_graph_prefix"]


def add_graph_prefix(graph: dict, outputs: Any, prefix: str) -> tuple:
    """Prefix every node id of an expansion `graph` (and the links in `outputs`) with `prefix`."""
    new_graph = {}
    for node_id, node in graph.items():
        inputs = {k: [prefix + v[0], v[1]] if is_link(v) else v for k, v in node.get("inputs", {}).items()}
        new_graph[prefix + node_id] = {**node, "inputs": inputs}
    new_outputs = tuple([prefix + o[0], o[1]] if is_link(o) else o for o in outputs)
    return new_graph, new_outputs
