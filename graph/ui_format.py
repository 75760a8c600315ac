"""Convert a UI-format workflow (what the editor saves and embeds in PNGs) into an API-format prompt (docs/architecture.md §4.2).

The UI format describes a drawing: nodes with positions, widget values in a flat list, links in a side table, and
helper nodes that never run (Reroute, PrimitiveNode, notes). The API format is the executable graph
`{node_id: {"class_type": str, "inputs": {name: literal | [src_id, slot]}}}`. Conversion needs the catalogue
because `widgets_values` is positional: only the node's declared input order tells which value belongs to which
input.

Both saved versions are read: 0.4 (links as `[id, origin, origin_slot, target, target_slot, type]`) and 1.0 (links
as objects, plus `definitions.subgraphs`). Either link shape is accepted in either version. Subgraph instances are
flattened: an inner node gets the id `"<instance>:<inner>"` (nested instances repeat the pattern), so the ids stay
unique and traceable back to the drawing.

Every problem with the input raises `WorkflowConversionError` with a message naming the node and what is wrong;
no other exception type escapes `ui_to_api`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from graph.node_spec import HIDDEN, INT, InputSpec

MODE_MUTED = 2      # "never": the node does not run and its outputs do not exist
MODE_BYPASSED = 4   # the node does not run; its outputs pass through from a matching input

SUBGRAPH_INPUT_NODE = -10   # pseudo-node inside a subgraph whose output slots are the subgraph's inputs
SUBGRAPH_OUTPUT_NODE = -20  # pseudo-node inside a subgraph whose input slots are the subgraph's outputs

REROUTE, PRIMITIVE = "Reroute", "PrimitiveNode"
VIRTUAL_TYPES = frozenset({REROUTE, PRIMITIVE, "Note", "MarkdownNote"})  # editor-only nodes, never sent to run

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
SEED_NAMES = frozenset({"seed", "noise_seed"})


class WorkflowConversionError(Exception):
    """The workflow cannot be turned into a prompt; the message names the node and the problem."""


def is_ui_workflow(data: Any) -> bool:
    """True for the UI format (`nodes` and `links` lists); API prompts are maps of node id to node instead."""
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


def ui_to_api(workflow: dict, catalogue: Any, services: Any = None) -> dict:
    """The API prompt for `workflow`.

    Muted, bypassed and editor-only nodes are left out; links are resolved through them. Widget values missing
    from the drawing are simply omitted so validation can report them (or apply defaults). `services` is accepted
    for symmetry with validation; conversion itself does not need folder listings.
    """
    try:
        return _Converter(catalogue).convert(workflow)
    except WorkflowConversionError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as exc:
        # A safety net: the checks below should catch malformed data first, but callers rely on one error type.
        raise WorkflowConversionError(f"Malformed workflow: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class _Link:
    id: Any
    origin_id: str
    origin_slot: int
    target_id: str
    target_slot: int
    type: Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_node_id(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, str) and value != "")


def _parse_link(entry: Any, where: str) -> _Link:
    """One `links[]` entry, list or object form; node ids are kept as strings so int and str ids compare equal."""
    if isinstance(entry, (list, tuple)):
        if len(entry) < 5:
            raise WorkflowConversionError(
                f"{where}: link entry {entry!r} must be [id, origin_id, origin_slot, target_id, target_slot, type]")
        fields = list(entry[:5]) + [entry[5] if len(entry) > 5 else None]
    elif isinstance(entry, dict):
        missing = [k for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot") if k not in entry]
        if missing:
            raise WorkflowConversionError(f"{where}: link entry {entry!r} is missing {', '.join(missing)}")
        fields = [entry["id"], entry["origin_id"], entry["origin_slot"], entry["target_id"], entry["target_slot"],
                  entry.get("type")]
    else:
        raise WorkflowConversionError(
            f"{where}: link entry {entry!r} must be a list or an object, not {type(entry).__name__}")
    link_id, origin, origin_slot, target, target_slot, kind = fields
    if not _is_node_id(link_id):
        raise WorkflowConversionError(f"{where}: link entry {entry!r} has an invalid id {link_id!r}")
    for label, value in (("origin_id", origin), ("target_id", target)):
        if not _is_node_id(value):
            raise WorkflowConversionError(f"{where}: link {link_id} has an invalid {label} {value!r}")
    for label, value in (("origin_slot", origin_slot), ("target_slot", target_slot)):
        if not _is_int(value) or value < 0:
            raise WorkflowConversionError(f"{where}: link {link_id} has an invalid {label} {value!r}")
    return _Link(link_id, str(origin), origin_slot, str(target), target_slot, kind)


class _Graph:
    """The nodes and links of one graph level (the workflow itself or one subgraph definition), checked once."""

    def __init__(self, data: Any, where: str) -> None:
        self.where = where
        if not isinstance(data, dict):
            raise WorkflowConversionError(f"{where} must be a JSON object, not {type(data).__name__}")
        nodes = data.get("nodes")
        if not isinstance(nodes, list):
            raise WorkflowConversionError(f"{where}: 'nodes' must be a list, not {type(nodes).__name__}")
        self.nodes: Dict[str, dict] = {}
        for index, node in enumerate(nodes):
            if not isinstance(node, dict):
                raise WorkflowConversionError(f"{where}: nodes[{index}] must be an object, not {type(node).__name__}")
            if not _is_node_id(node.get("id")):
                raise WorkflowConversionError(f"{where}: nodes[{index}] has no valid 'id' (got {node.get('id')!r})")
            if not isinstance(node.get("type"), str) or not node["type"]:
                raise WorkflowConversionError(f"{where}: node #{node['id']} has no valid 'type'")
            key = str(node["id"])
            if key in self.nodes:
                raise WorkflowConversionError(f"{where}: node id {node['id']!r} is used by more than one node")
            _check_node_shape(node, where)
            self.nodes[key] = node
        links = data.get("links", [])
        if links is None:
            links = []
        if not isinstance(links, list):
            raise WorkflowConversionError(f"{where}: 'links' must be a list, not {type(links).__name__}")
        self.links: Dict[str, _Link] = {}
        for entry in links:
            link = _parse_link(entry, where)
            key = str(link.id)
            if key in self.links:
                raise WorkflowConversionError(f"{where}: link id {link.id!r} is used by more than one link")
            self.links[key] = link
        raw_inputs = data.get("inputs") or []
        if not isinstance(raw_inputs, list):
            raise WorkflowConversionError(f"{where}: 'inputs' must be a list")
        # Subgraph input names, by slot: used to match the instance's input slots by name when possible.
        self.input_names = [i.get("name") if isinstance(i, dict) else None for i in raw_inputs]

    def output_link(self, slot: int) -> Optional[_Link]:
        """The inner link feeding subgraph output `slot`, if any."""
        for link in self.links.values():
            if link.target_id == str(SUBGRAPH_OUTPUT_NODE) and link.target_slot == slot:
                return link
        return None


def _check_node_shape(node: dict, where: str) -> None:
    label = f"{where}: node #{node['id']} ({node['type']})"
    mode = node.get("mode")
    if mode is not None and not _is_int(mode):
        raise WorkflowConversionError(f"{label}: 'mode' must be an integer, not {mode!r}")
    for key in ("inputs", "outputs"):
        slots = node.get(key)
        if slots is None:
            continue
        if not isinstance(slots, list):
            raise WorkflowConversionError(f"{label}: '{key}' must be a list, not {type(slots).__name__}")
        for index, slot in enumerate(slots):
            if not isinstance(slot, dict):
                raise WorkflowConversionError(f"{label}: {key}[{index}] must be an object")
    for index, slot in enumerate(node.get("inputs") or ()):
        link = slot.get("link")
        if link is not None and not _is_node_id(link):
            raise WorkflowConversionError(f"{label}: inputs[{index}] has an invalid link id {link!r}")
    values = node.get("widgets_values")
    if values is not None and not isinstance(values, (list, dict)):
        raise WorkflowConversionError(
            f"{label}: 'widgets_values' must be a list or an object, not {type(values).__name__}")


def _subgraph_definitions(workflow: dict) -> Dict[str, dict]:
    """Subgraph definitions by id. Nested definitions are normally hoisted to the root; nested ones are read too."""
    found: Dict[str, dict] = {}
    pending = [("workflow", workflow)]
    while pending:
        where, holder = pending.pop()
        definitions = holder.get("definitions")
        if definitions is None:
            continue
        if not isinstance(definitions, dict):
            raise WorkflowConversionError(f"{where}: 'definitions' must be an object")
        subgraphs = definitions.get("subgraphs", [])
        if subgraphs is None:
            continue
        if not isinstance(subgraphs, list):
            raise WorkflowConversionError(f"{where}: 'definitions.subgraphs' must be a list")
        for index, sub in enumerate(subgraphs):
            if not isinstance(sub, dict) or not isinstance(sub.get("id"), str) or not sub["id"]:
                raise WorkflowConversionError(f"{where}: definitions.subgraphs[{index}] has no valid 'id'")
            if sub["id"] not in found:
                found[sub["id"]] = sub
                pending.append((f"subgraph '{sub.get('name') or sub['id']}'", sub))
    return found


# --------------------------------------------------------------------------------------------------------------
# Resolution


class _Scope:
    """One graph level as it appears in the flattened prompt: a parsed graph plus the id prefix of its instance.

    The root scope has prefix "" and no parent. A subgraph instance's scope has prefix "<path>:<instance>:" and
    points back at the instance node in its parent, which is where its subgraph inputs come from.
    """

    def __init__(self, graph: _Graph, prefix: str, parent: Optional["_Scope"] = None,
                 instance: Optional[dict] = None, lineage: Tuple[str, ...] = ()) -> None:
        self.graph = graph
        self.prefix = prefix
        self.parent = parent
        self.instance = instance
        self.lineage = lineage  # subgraph ids from the root down to here, to refuse a subgraph inside itself

    def api_id(self, node_id: Any) -> str:
        return f"{self.prefix}{node_id}"


@dataclass(frozen=True)
class _Ref:
    """The input links to `[node_id, slot]` in the prompt."""
    node_id: str
    slot: int


@dataclass(frozen=True)
class _Literal:
    """The input takes a constant (from a PrimitiveNode)."""
    value: Any


class _Outcome:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DROPPED = _Outcome("DROPPED")          # the source does not run (muted, or nothing to pass through): omit the input
UNCONNECTED = _Outcome("UNCONNECTED")  # a subgraph input nobody feeds: as if the inner input had no link

_Result = Union[_Ref, _Literal, _Outcome]


@dataclass(frozen=True)
class _Follow:
    """Keep resolving: the value comes from link `link_id` of `scope`."""
    scope: _Scope
    link_id: Any


def _wrap(value: Any) -> Any:
    """A literal list must not look like a link in the prompt (docs/architecture.md §4.2)."""
    return {"__value__": value} if isinstance(value, list) else value


def _mode(node: dict) -> int:
    mode = node.get("mode")
    return mode if _is_int(mode) else 0


def _types_match(a: Any, b: Any) -> bool:
    return a is not None and b is not None and str(a).strip() == str(b).strip()


class _Converter:
    def __init__(self, catalogue: Any) -> None:
        self.catalogue = catalogue
        self.definitions: Dict[str, dict] = {}
        self.parsed: Dict[str, _Graph] = {}
        self.child_scopes: Dict[str, _Scope] = {}
        self.prompt: Dict[str, dict] = {}

    def convert(self, workflow: Any) -> dict:
        if not isinstance(workflow, dict):
            raise WorkflowConversionError(
                f"A UI workflow must be a JSON object, not {type(workflow).__name__}")
        self.definitions = _subgraph_definitions(workflow)
        root = _Scope(_Graph(workflow, "Workflow"), "")
        self._emit_scope(root)
        return self.prompt

    # ---- subgraphs

    def _subgraph(self, sub_id: str) -> _Graph:
        graph = self.parsed.get(sub_id)
        if graph is None:
            definition = self.definitions[sub_id]
            graph = self.parsed[sub_id] = _Graph(definition, f"Subgraph '{definition.get('name') or sub_id}'")
        return graph

    def _child_scope(self, scope: _Scope, instance: dict) -> _Scope:
        prefix = f"{scope.api_id(instance['id'])}:"
        child = self.child_scopes.get(prefix)
        if child is None:
            sub_id = instance["type"]
            if sub_id in scope.lineage:
                raise WorkflowConversionError(
                    f"Node #{scope.api_id(instance['id'])}: subgraph '{sub_id}' contains an instance of itself")
            child = self.child_scopes[prefix] = _Scope(self._subgraph(sub_id), prefix, scope, instance,
                                                       scope.lineage + (sub_id,))
        return child

    # ---- emission

    def _emit_scope(self, scope: _Scope) -> None:
        for node in scope.graph.nodes.values():
            if _mode(node) in (MODE_MUTED, MODE_BYPASSED) or node["type"] in VIRTUAL_TYPES:
                continue
            if node["type"] in self.definitions:
                self._emit_scope(self._child_scope(scope, node))
            else:
                self._emit_node(scope, node)

    def _emit_node(self, scope: _Scope, node: dict) -> None:
        node_id = scope.api_id(node["id"])
        if node_id in self.prompt:  # e.g. a string id "7:1" beside the flattened inner node 1 of instance 7
            raise WorkflowConversionError(f"Node #{node_id}: this id is produced twice when subgraphs are flattened")
        spec = self.catalogue.get(node["type"])
        if spec is None:
            raise WorkflowConversionError(f"Node #{node_id}: unknown node type '{node['type']}'")
        try:
            declared = [i for i in spec.current_inputs() if i.section != HIDDEN]
        except Exception as exc:  # a V1 class's INPUT_TYPES may fail (e.g. a missing folder)
            raise WorkflowConversionError(
                f"Node #{node_id} ({node['type']}): could not read its inputs: {exc}") from exc
        inputs = _widget_inputs(node, declared, f"Node #{node_id} ({node['type']})")
        if spec.live_inputs is not None:  # V3 dynamic inputs: a combo's value decides which widgets follow it
            for _ in range(8):
                live = [i for i in spec.inputs_for(inputs) if i.section != HIDDEN]
                remapped = _widget_inputs(node, live, f"Node #{node_id} ({node['type']})")
                if remapped == inputs:
                    break
                inputs, declared = remapped, live
        for index, slot in enumerate(node.get("inputs") or ()):
            if slot.get("link") is None:
                continue
            widget = slot.get("widget")
            name = slot.get("name") or (widget.get("name") if isinstance(widget, dict) else None)
            if not isinstance(name, str) or not name:
                raise WorkflowConversionError(f"Node #{node_id} ({node['type']}): linked input {index} has no name")
            result = self._resolve(scope, slot["link"], f"Node #{node_id} ({node['type']}) input '{name}'")
            if isinstance(result, _Ref):
                inputs[name] = [result.node_id, result.slot]
            elif isinstance(result, _Literal):
                inputs[name] = _wrap(result.value)
            elif result is DROPPED:
                inputs.pop(name, None)
            # UNCONNECTED: keep the widget value, if the node has one for this input
        order = [i.name for i in declared]
        ordered = {name: inputs[name] for name in order if name in inputs}
        ordered.update((name, value) for name, value in inputs.items() if name not in ordered)
        self.prompt[node_id] = {"class_type": node["type"], "inputs": ordered}

    # ---- links

    def _resolve(self, scope: _Scope, link_id: Any, where: str) -> _Result:
        """Follow a link back through reroutes, bypassed nodes and subgraph borders to what really feeds it."""
        seen = set()
        while True:
            key = (scope.prefix, str(link_id))
            if key in seen:
                raise WorkflowConversionError(f"{where}: links form a loop through link {link_id}")
            seen.add(key)
            link = scope.graph.links.get(str(link_id))
            if link is None:
                raise WorkflowConversionError(
                    f"{where}: link {link_id} is not in the links of {scope.graph.where.lower()}")
            step = self._step(scope, link, where)
            if not isinstance(step, _Follow):
                return step
            scope, link_id = step.scope, step.link_id

    def _step(self, scope: _Scope, link: _Link, where: str) -> Union[_Result, _Follow]:
        """Where the value on `link` comes from, one node back."""
        if link.origin_id == str(SUBGRAPH_INPUT_NODE) and scope.instance is not None:
            return self._from_subgraph_input(scope, link.origin_slot, where)
        node = scope.graph.nodes.get(link.origin_id)
        if node is None:
            raise WorkflowConversionError(
                f"{where}: link {link.id} comes from node #{scope.api_id(link.origin_id)}, "
                f"which is not in {scope.graph.where.lower()}")
        node_type = node["type"]
        mode = _mode(node)
        if mode == MODE_MUTED:
            return DROPPED
        if mode == MODE_BYPASSED:
            return self._through_bypass(scope, node, link)
        if node_type == REROUTE:
            source = _first_link(node)
            return DROPPED if source is None else _Follow(scope, source)
        if node_type == PRIMITIVE:
            value = _first_value(node.get("widgets_values"))
            return DROPPED if value is None else _Literal(value)
        if node_type in VIRTUAL_TYPES:
            raise WorkflowConversionError(
                f"{where}: link {link.id} comes from node #{scope.api_id(node['id'])} ({node_type}), "
                f"which has no outputs")
        if node_type in self.definitions:
            child = self._child_scope(scope, node)
            inner = child.graph.output_link(link.origin_slot)
            return DROPPED if inner is None else _Follow(child, inner.id)
        return _Ref(scope.api_id(node["id"]), link.origin_slot)

    def _from_subgraph_input(self, scope: _Scope, slot: int, where: str) -> Union[_Result, _Follow]:
        """Inside a subgraph, input `slot` carries whatever feeds the instance's matching input outside."""
        instance = scope.instance
        slots = instance.get("inputs") or []
        name = scope.graph.input_names[slot] if slot < len(scope.graph.input_names) else None
        match = next((s for s in slots if name is not None and s.get("name") == name), None)
        if match is None and slot < len(slots):
            match = slots[slot]
        if match is None or match.get("link") is None:
            return UNCONNECTED
        return _Follow(scope.parent, match["link"])

    def _through_bypass(self, scope: _Scope, node: dict, link: _Link) -> Union[_Result, _Follow]:
        """A bypassed node hands on the input whose type matches the requested output (same slot preferred)."""
        outputs = node.get("outputs") or []
        wanted = link.type
        if link.origin_slot < len(outputs) and outputs[link.origin_slot].get("type") is not None:
            wanted = outputs[link.origin_slot]["type"]
        slots = node.get("inputs") or []
        chosen = None
        if link.origin_slot < len(slots) and _types_match(slots[link.origin_slot].get("type"), wanted):
            chosen = slots[link.origin_slot]
        else:
            chosen = next((s for s in slots if _types_match(s.get("type"), wanted)), None)
        if chosen is None or chosen.get("link") is None:
            return DROPPED
        return _Follow(scope, chosen["link"])


def _first_link(node: dict) -> Any:
    slots = node.get("inputs") or []
    return slots[0].get("link") if slots else None


def _first_value(values: Any) -> Any:
    if isinstance(values, list):
        return values[0] if values else None
    if isinstance(values, dict):
        return next(iter(values.values()), None)
    return None


# --------------------------------------------------------------------------------------------------------------
# Widget values


def _is_widget(spec: InputSpec) -> bool:
    return spec.is_widget and not spec.options.get("forceInput")


def _has_control(spec: InputSpec) -> bool:
    """Seed-like widgets are saved followed by their control_after_generate value ("fixed", "randomize", ...)."""
    return bool(spec.options.get("control_after_generate")) or (spec.type == INT and spec.name in SEED_NAMES)


def _has_upload(spec: InputSpec) -> bool:
    return spec.is_combo and bool(spec.options.get("image_upload"))


def _widget_inputs(node: dict, declared: List[InputSpec], label: str) -> dict:
    """Map `widgets_values` onto the node's widget inputs (catalogue order, or by name for the object form).

    Extra values saved after some widgets (a seed's control value, an image combo's upload button) are skipped.
    When the list holds every extra, each is skipped by position; when it holds fewer (older or hand-written
    files), a control value is skipped only if it is one of the control words, and an upload value only while
    the list still has more values than widgets.
    """
    values = node.get("widgets_values")
    widgets = [spec for spec in declared if _is_widget(spec)]
    if values is None:
        return {}
    if isinstance(values, dict):
        return {w.name: _wrap(values[w.name]) for w in widgets if values.get(w.name) is not None}
    if not isinstance(values, list):
        raise WorkflowConversionError(f"{label}: 'widgets_values' must be a list or an object")
    extras = sum(1 for w in widgets if _has_control(w)) + sum(1 for w in widgets if _has_upload(w))
    surplus = len(values) - len(widgets)
    complete = surplus >= extras
    result: dict = {}
    pos = 0
    for widget in widgets:
        if pos >= len(values):
            break
        value = values[pos]
        pos += 1
        if value is not None:
            result[widget.name] = _wrap(value)
        if surplus <= 0 or pos >= len(values):
            continue
        following = values[pos]
        if _has_control(widget):
            if complete or (isinstance(following, str) and following in CONTROL_VALUES):
                pos += 1
                surplus -= 1
        elif _has_upload(widget):
            pos += 1
            surplus -= 1
    return result


__all__ = ["WorkflowConversionError", "is_ui_workflow", "ui_to_api"]
