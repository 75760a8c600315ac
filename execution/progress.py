"""Per-node progress for one job: `progress` and `progress_state` events.

`progress_state` carries the nodes that are running plus the node whose state just changed, not every node the job
ever touched: clients merge it into what they know, and it keeps each event O(active nodes) on graphs of thousands
of nodes.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

RUNNING, FINISHED = "running", "finished"


class ProgressTracker:
    def __init__(self, run: Any) -> None:
        self.run = run
        self.states: Dict[str, dict] = {}
        self.running: Dict[str, dict] = {}

    def _state(self, node_id: str) -> dict:
        state = self.states.get(node_id)
        if state is None:
            graph = self.run.graph
            state = self.states[node_id] = {
                "value": 0, "max": 1, "state": RUNNING, "node_id": node_id, "prompt_id": self.run.prompt_id,
                "display_node_id": graph.get_display_node_id(node_id),
                "parent_node_id": graph.get_parent_node_id(node_id),
                "real_node_id": graph.get_real_node_id(node_id)}
        return state

    def _publish(self, changed: dict) -> None:
        nodes = {nid: dict(s) for nid, s in self.running.items()}
        nodes[changed["node_id"]] = dict(changed)
        self.run.emit("progress_state", {"nodes": nodes})

    def start(self, node_id: str) -> None:
        state = self._state(node_id)
        state["state"] = RUNNING
        self.running[node_id] = state
        self._publish(state)

    def update(self, node_id: str, value: float, total: Optional[float]) -> None:
        state = self._state(node_id)
        state["value"] = value
        if total is not None:
            state["max"] = total
        self.running[node_id] = state
        self.run.emit("progress", {"value": value, "max": state["max"], "node": node_id})
        self._publish(state)

    def finish(self, node_id: str) -> None:
        state = self.running.pop(node_id, None)
        if state is None:
            return
        state["state"] = FINISHED
        state["value"] = state["max"]
        self._publish(state)

    def running_node(self) -> Optional[str]:
        return next(reversed(self.running), None) if self.running else None


def describe_inputs(inputs: dict) -> dict:
    """A JSON-safe, short description of a node's inputs for execution_error events."""
    out = {}
    for name, items in (inputs or {}).items():
        out[name] = [_describe(item) for item in (items if isinstance(items, list) else [items])][:8]
    return out


def _describe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 200 else value[:200] + "..."
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__}(shape={list(shape)}, dtype={getattr(value, 'dtype', '?')})"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
