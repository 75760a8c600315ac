"""Calling one node: list mapping, execution blockers, async functions, and the shapes a node may return.

Every value travelling between nodes is a list of items. A node that is not `input_is_list` is called once per item
(the longest input decides how many calls; shorter lists repeat their last item); an `input_is_list` node is called
once with whole lists. An item carrying an ExecutionBlocker is not called; the blocker becomes that item's output.
A node returns a tuple of outputs, `{"ui": ..., "result": ...}`, `{"result": ..., "expand": graph}`, or an
ExecutionBlocker; `normalize` turns each into a `NodeReturn`.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from execution.blocker import ExecutionBlocker
from execution.context import NodeContext, reset_current_context, set_current_context
from execution.graph_builder import GraphBuilder
from graph.node_spec import NodeSpec
from graph.prompt import is_link


class NodeReturnError(Exception):
    """A node returned something the engine cannot use."""


@dataclass
class NodeReturn:
    values: tuple = ()
    ui: Optional[dict] = None
    expand: Optional[dict] = None
    blocker: Optional[ExecutionBlocker] = None


def normalize(raw: Any, spec: NodeSpec) -> NodeReturn:
    n_out = len(spec.outputs)
    if isinstance(raw, NodeReturn):
        return raw
    if isinstance(raw, ExecutionBlocker):
        return NodeReturn(values=(raw,) * n_out, blocker=raw)
    if isinstance(raw, dict):
        ui = raw.get("ui")
        expand = raw.get("expand")
        result = raw.get("result", ())
        if result is None:
            result = ()
        if isinstance(result, ExecutionBlocker):
            result = (result,) * n_out
        if not isinstance(result, (tuple, list)):
            raise NodeReturnError(f"{spec.name} returned a 'result' that is not a tuple: {type(result).__name__}")
        if ui is not None and not isinstance(ui, dict):
            raise NodeReturnError(f"{spec.name} returned a 'ui' that is not an object: {type(ui).__name__}")
        if expand is not None and not isinstance(expand, dict):
            raise NodeReturnError(f"{spec.name} returned an 'expand' that is not a graph: {type(expand).__name__}")
        values = tuple(result)
    elif isinstance(raw, (tuple, list)):
        values = tuple(raw)
        ui = expand = None
    elif raw is None and n_out == 0:
        return NodeReturn()
    else:
        raise NodeReturnError(
            f"{spec.name} returned {type(raw).__name__}; a node must return a tuple of its {n_out} output(s) "
            f"or a dict with 'result' and/or 'ui'")
    if len(values) < n_out and (values or ui is None):
        raise NodeReturnError(f"{spec.name} returned {len(values)} value(s) but declares {n_out} output(s)")
    return NodeReturn(values=values, ui=ui, expand=expand)


def plan_calls(spec: NodeSpec, inputs: Dict[str, list]) -> List[Dict[str, Any]]:
    """The keyword arguments of each call. Items carrying a blocker become the blocker itself."""
    if spec.input_is_list:
        for values in inputs.values():
            for item in values:
                if isinstance(item, ExecutionBlocker):
                    return [item]  # type: ignore[list-item]
        return [dict(inputs)]
    if not inputs:
        return [{}]
    lengths = [len(v) for v in inputs.values()]
    if min(lengths) == 0:
        return []
    calls: List[Any] = []
    for index in range(max(lengths)):
        kwargs = {}
        blocked = None
        for name, values in inputs.items():
            item = values[index] if index < len(values) else values[-1]
            if isinstance(item, ExecutionBlocker):
                blocked = item
                break
            kwargs[name] = item
        calls.append(blocked if blocked is not None else kwargs)
    return calls


async def run_calls(spec: NodeSpec, instance: Any, ctx: NodeContext, calls: List[Any],
                    function: Optional[Callable[..., Any]] = None,
                    on_blocked: Optional[Callable[[ExecutionBlocker], ExecutionBlocker]] = None) -> list:
    """Run `function` (default: the node's execute) for each planned call; async ones run concurrently.

    Returns one raw result per call (blocked calls give their blocker, passed through `on_blocked`).
    """
    fn = function or spec.execute
    results: List[Any] = [None] * len(calls)
    pending: Dict[int, Any] = {}
    for index, kwargs in enumerate(calls):
        if isinstance(kwargs, ExecutionBlocker):
            results[index] = on_blocked(kwargs) if on_blocked else kwargs
            continue
        ctx.check_interrupt()
        GraphBuilder.set_default_prefix(ctx.node_id, index, 0)
        token = set_current_context(ctx)
        try:
            raw = fn(instance, ctx, kwargs)
            if inspect.isawaitable(raw):
                pending[index] = asyncio.ensure_future(raw)
            else:
                results[index] = raw
        finally:
            reset_current_context(token)
    if pending:
        try:
            done = await asyncio.gather(*pending.values())
        except BaseException:
            for task in pending.values():
                task.cancel()
            raise
        for index, value in zip(pending, done):
            results[index] = value
    return results


def merge_returns(spec: NodeSpec, returns: List[NodeReturn],
                  resolve_link: Optional[Callable[[list], list]] = None) -> tuple:
    """Combine per-call returns into per-slot item lists and one ui dict.

    Output slots flagged `is_list` are concatenated; others gain one item per call. Links into an expansion are
    resolved through `resolve_link` (which returns the linked output's item list).
    """
    n_out = len(spec.outputs)
    values: List[list] = [[] for _ in range(n_out)]
    uis: List[dict] = []
    for ret in returns:
        if ret.ui:
            uis.append(ret.ui)
        for slot in range(n_out):
            if slot >= len(ret.values):
                continue
            value = ret.values[slot]
            if resolve_link is not None and ret.expand is not None and is_link(value):
                values[slot].extend(resolve_link(value))
            elif spec.outputs[slot].is_list and not isinstance(value, ExecutionBlocker):
                if not isinstance(value, (list, tuple)):
                    raise NodeReturnError(f"{spec.name} output {slot} is a list output but returned "
                                          f"{type(value).__name__}")
                values[slot].extend(value)
            else:
                values[slot].append(value)
    ui = merge_ui(uis)
    return values, ui


def merge_ui(uis: List[dict]) -> Optional[dict]:
    if not uis:
        return None
    if len(uis) == 1:
        return uis[0]
    merged: Dict[str, Any] = {}
    for ui in uis:
        for key, value in ui.items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return merged
