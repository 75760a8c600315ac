"""Validate an API-format prompt against the catalogue (docs/architecture.md §4.1, §4.4).

Outputs-driven: only nodes upstream of the selected output nodes are checked. Each node's own inputs are checked
once (presence, link shape, link types, literal coercion, bounds, combo choices, VALIDATE_INPUTS); a node is valid
when its own checks pass and everything it links to is valid. Outputs whose chain is invalid are dropped; the prompt
is rejected only when none remain. Cycles are found during the same walk and reported on the node that closes them.
Nothing here raises on bad input: every problem becomes a structured error.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from graph import errors
from graph.catalogue import Catalogue
from graph.node_spec import BOOLEAN, FLOAT, HIDDEN, HIDDEN_KINDS, INT, REQUIRED, STRING, InputSpec, NodeSpec
from graph.prompt import link_parts, unwrap_literal
from graph.socket_types import types_compatible


@dataclass
class ValidationResult:
    ok: bool
    error: Optional[dict]
    outputs: List[str]
    node_errors: Dict[str, dict]
    prompt: Dict[str, dict] = field(default_factory=dict)  # literals coerced, `__value__` unwrapped
    order: List[str] = field(default_factory=list)  # validated nodes, every node after its inputs

    def response_error(self) -> dict:
        """The 400 body of POST /prompt."""
        return {"error": self.error, "node_errors": self.node_errors}


class _Rejected(Exception):
    def __init__(self, err: dict):
        super().__init__(err["message"])
        self.err = err


def coerce_literal(value: Any, kind: str) -> Any:
    """Convert a literal to a widget type; ValueError/TypeError when it cannot be."""
    if kind == INT:
        if isinstance(value, str):
            return int(value.strip())
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("not a finite number")
        return int(value)
    if kind == FLOAT:
        result = float(value.strip() if isinstance(value, str) else value)
        if math.isnan(result):
            raise ValueError("NaN is not a number")
        return result
    if kind == STRING:
        return value if isinstance(value, str) else str(value)
    if kind == BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off", ""):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        if isinstance(value, (int, float)):
            return bool(value)
        raise TypeError(f"{type(value).__name__} is not a boolean")
    return value


def _run_maybe_async(result: Any) -> Any:
    """Resolve an async validator's result, from inside a running event loop too (on a helper thread)."""
    if not inspect.isawaitable(result):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(result))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _await(result)).result()


async def _await(awaitable: Any) -> Any:
    return await awaitable


class _Validator:
    def __init__(self, prompt: dict, catalogue: Catalogue, services: Any):
        self.prompt = prompt
        self.catalogue = catalogue
        self.services = services
        self.coerced: Dict[str, dict] = {}
        self.deps: Dict[str, list] = {}  # node -> [source ids it links to]
        self.own_ok: Dict[str, bool] = {}
        self.node_errors: Dict[str, list] = {}
        self.inputs_cache: Dict[str, Any] = {}
        self.choices_cache: Dict[int, list] = {}

    # -- per node ---------------------------------------------------------------------------------------------
    def spec_inputs(self, spec: NodeSpec, node_inputs: dict) -> dict:
        if spec.live_inputs is not None:  # depends on this node's own values: never shared
            return spec.input_map(spec.inputs_for(node_inputs))
        cached = self.inputs_cache.get(spec.name)
        if cached is None:
            cached = self.inputs_cache[spec.name] = spec.input_map()
        return cached

    def choices(self, spec: InputSpec) -> list:
        key = id(spec)
        cached = self.choices_cache.get(key)
        if cached is None:
            cached = self.choices_cache[key] = spec.choice_list(self.services)
        return cached

    def check_node(self, node_id: str) -> list:
        """Run the node's own checks once; returns the ids it links to (its dependencies)."""
        deps = self.deps.get(node_id)
        if deps is not None:
            return deps
        try:
            return self._check_node(node_id)
        except Exception as exc:  # e.g. a pack's INPUT_TYPES raising: reported on the node, never raised
            self.node_errors[node_id] = [errors.error(
                "exception_during_validation", "Exception when validating node", str(exc),
                exception_type=type(exc).__name__, traceback=traceback.format_exc())]
            self.own_ok[node_id] = False
            self.deps[node_id] = []
            return []

    def _check_node(self, node_id: str) -> list:
        node = self.prompt[node_id]
        spec = self.catalogue.get(node["class_type"])
        raw_inputs = node.get("inputs") or {}
        values = dict(raw_inputs)
        self.coerced[node_id] = {"class_type": node["class_type"], "inputs": values}
        for key, val in node.items():
            if key not in ("class_type", "inputs"):
                self.coerced[node_id][key] = val
        errs: list = []
        deps = []
        received_types: dict = {}
        declared = self.spec_inputs(spec, raw_inputs)
        claims = spec.validate_claims
        skip_builtin_for_all = spec.validate_takes_all
        for name, ispec in declared.items():
            if ispec.section == HIDDEN and (ispec.type in HIDDEN_KINDS or name not in raw_inputs):
                continue  # filled by the engine; a hidden input of the node's own type may come with the prompt
            if name not in raw_inputs:
                if ispec.section == REQUIRED:
                    errs.append(errors.input_error("required_input_missing", "Required input is missing", name))
                continue
            val = raw_inputs[name]
            if isinstance(val, (list, tuple)):
                if ispec.raw_link:
                    continue
                link = link_parts(val)
                if link is None:
                    errs.append(errors.input_error(
                        "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name, f"{name}: {val!r}", received_value=val))
                    continue
                src, slot = link
                src_node = self.prompt.get(src)
                if src_node is None:
                    errs.append(errors.input_error(
                        "bad_linked_input", f"Input '{name}' is linked to node '{src}', which is not in the prompt",
                        name, f"{name}: node '{src}' does not exist", received_value=val))
                    continue
                src_spec = self.catalogue.get(src_node.get("class_type"))
                if slot < 0 or slot >= len(src_spec.outputs):
                    errs.append(errors.input_error(
                        "bad_linked_input",
                        f"Input '{name}' is linked to output {slot} of node '{src}' ({src_spec.name}), "
                        f"which has {len(src_spec.outputs)} output(s)",
                        name, f"{name}: output slot {slot} does not exist", received_value=val))
                    continue
                if link != tuple(val) or isinstance(val, tuple):
                    values[name] = [src, slot]
                received = src_spec.outputs[slot].type
                if spec.validate_wants_types:
                    received_types[name] = received
                elif not types_compatible(received, ispec.type):
                    errs.append(errors.input_error(
                        "return_type_mismatch", "Return type mismatch between linked nodes", name,
                        f"{name}, received_type({received}) mismatch input_type({ispec.type})",
                        input_config=ispec.to_catalogue(self.services), received_type=str(received),
                        linked_node=[src, slot]))
                    continue
                deps.append(src)
                continue
            # a literal
            val = unwrap_literal(val)
            kind = ispec.type if isinstance(ispec.type, str) else None
            if kind in (INT, FLOAT, STRING, BOOLEAN):
                try:
                    val = coerce_literal(val, kind)
                except (ValueError, TypeError, OverflowError) as exc:
                    errs.append(errors.input_error(
                        "invalid_input_type", f"Failed to convert an input value to a {kind} value", name,
                        f"{name}, {val!r}, {exc}", input_config=ispec.to_catalogue(self.services),
                        received_value=val))
                    continue
            # literal lists stay wrapped, so the scheduler never mistakes ["a", 1] for a link
            values[name] = {"__value__": val} if isinstance(val, list) else val
            if skip_builtin_for_all or name in claims:
                continue
            opts = ispec.options
            if kind in (INT, FLOAT):
                lo, hi = opts.get("min"), opts.get("max")
                if lo is not None and val < lo:
                    errs.append(errors.input_error(
                        "value_smaller_than_min", f"Value {val} smaller than min of {lo}", name,
                        f"{name}", input_config=ispec.to_catalogue(self.services), received_value=val))
                    continue
                if hi is not None and val > hi:
                    errs.append(errors.input_error(
                        "value_bigger_than_max", f"Value {val} bigger than max of {hi}", name,
                        f"{name}", input_config=ispec.to_catalogue(self.services), received_value=val))
                    continue
            elif ispec.is_combo:
                choices = self.choices(ispec)
                picked = val if (isinstance(val, list) and opts.get("multiselect")) else [val]
                bad = [v for v in picked if not _in_choices(v, choices)]
                if bad:
                    shown = choices if len(choices) <= 20 else choices[:20] + ["..."]
                    errs.append(errors.input_error(
                        "value_not_in_list", "Value not in list", name, f"{name}: '{bad[0]}' not in {shown}",
                        input_config=ispec.to_catalogue(self.services), received_value=val))
                    continue
        # undeclared linked inputs are passed to V1 nodes as keyword arguments: their sources must run too
        for name, val in raw_inputs.items():
            if name not in declared and isinstance(val, list):
                link = link_parts(val)
                if link is not None and link[0] in self.prompt:
                    values[name] = [link[0], link[1]]
                    deps.append(link[0])
        if not errs and spec.validate is not None:
            errs.extend(self.custom_validation(node_id, spec, declared, values, received_types))
        if errs:
            self.node_errors[node_id] = errs
        self.own_ok[node_id] = not errs
        self.deps[node_id] = deps
        return deps

    def custom_validation(self, node_id: str, spec: NodeSpec, declared: dict, values: dict,
                          received_types: dict) -> list:
        # As ComfyUI gives VALIDATE_INPUTS: literals as values, linked inputs as None (their values do not exist
        # yet), and the hidden UNIQUE_ID / PROMPT.
        literals = {}
        for name, value in values.items():
            ispec = declared.get(name)
            if ispec is None or ispec.section == HIDDEN or (isinstance(value, list) and
                                                             not spec.links_as_none):
                continue
            literals[name] = None if isinstance(value, list) else unwrap_literal(value)
        for name, ispec in declared.items() if spec.links_as_none else ():
            if ispec.section == HIDDEN and ispec.type in ("UNIQUE_ID", "PROMPT"):
                literals[name] = node_id if ispec.type == "UNIQUE_ID" else self.prompt
        if not spec.validate_takes_all:
            literals = {k: v for k, v in literals.items() if k in spec.validate_claims}
        try:
            result = _run_maybe_async(spec.validate(node_id, literals, received_types, self.services))
        except Exception as exc:  # a node's own validator failing is reported, never raised
            return [errors.error("exception_during_validation", "Exception when validating node", str(exc),
                                 exception_type=type(exc).__name__, traceback=traceback.format_exc())]
        if result is True:
            return []
        names = ", ".join(sorted(literals) or sorted(received_types)) or spec.name
        detail = names if result is False or result is None else f"{names} - {result}"
        return [errors.error("custom_validation_failed", "Custom validation failed for node", detail,
                             input_name=(sorted(literals)[0] if len(literals) == 1 else None))]

    # -- the walk -----------------------------------------------------------------------------------------------
    def walk(self, outputs: List[str]) -> tuple:
        """Depth-first from each output, iteratively (chains can be thousands deep). Returns (valid, order)."""
        VISITING, DONE = 1, 2
        state: Dict[str, int] = {}
        valid: Dict[str, bool] = {}
        order: List[str] = []
        for out in outputs:
            if out in state:
                continue
            state[out] = VISITING
            stack = [(out, iter(self.check_node(out)))]
            path_index = {out: 0}
            while stack:
                node_id, pending = stack[-1]
                descended = False
                for src in pending:
                    st = state.get(src)
                    if st is None:
                        state[src] = VISITING
                        path_index[src] = len(stack)
                        stack.append((src, iter(self.check_node(src))))
                        descended = True
                        break
                    if st == VISITING:
                        self.report_cycle(node_id, src, [n for n, _ in stack[path_index[src]:]])
                if descended:
                    continue
                stack.pop()
                path_index.pop(node_id, None)
                state[node_id] = DONE
                ok = self.own_ok[node_id] and all(valid.get(d, False) for d in self.deps[node_id])
                valid[node_id] = ok
                order.append(node_id)
        return valid, order

    def report_cycle(self, closer: str, target: str, path: List[str]) -> None:
        cycle = path + [target]
        text = " -> ".join(cycle)
        node = self.prompt[closer]
        input_name = next((k for k, v in (node.get("inputs") or {}).items()
                           if link_parts(v) is not None and link_parts(v)[0] == target), None)
        self.node_errors.setdefault(closer, []).append(errors.input_error(
            "bad_linked_input", f"Dependency cycle: {text}", input_name or "",
            f"Node {closer} closes a cycle through nodes {text}", cycle=cycle))
        self.own_ok[closer] = False


def _in_choices(value: Any, choices: list) -> bool:
    try:
        return value in choices
    except TypeError:
        return False


def validate_prompt(prompt: Any, catalogue: Catalogue, partial_execution_targets: Optional[list] = None,
                    services: Any = None) -> ValidationResult:
    """Validate `prompt`; never raises on malformed input."""
    try:
        return _validate(prompt, catalogue, partial_execution_targets, services)
    except _Rejected as rejected:
        return ValidationResult(False, rejected.err, [], {})


def _validate(prompt: Any, catalogue: Catalogue, targets: Optional[list], services: Any) -> ValidationResult:
    if not isinstance(prompt, dict):
        raise _Rejected(errors.invalid_prompt(
            "Invalid prompt: the prompt must be a JSON object mapping node ids to nodes",
            f"received {type(prompt).__name__}"))
    outputs: List[str] = []
    target_set = None
    if targets is not None:
        if not isinstance(targets, list):
            raise _Rejected(errors.invalid_prompt(
                "Invalid prompt: partial_execution_targets must be a list of node ids"))
        target_set = {str(t) for t in targets}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise _Rejected(errors.invalid_prompt(
                "Cannot execute because a node is missing the class_type property.", f"Node ID '#{node_id}'",
                node_id=node_id))
        class_type = node["class_type"]
        spec = catalogue.get(class_type)
        if spec is None:
            raise _Rejected(errors.invalid_prompt(
                f"Cannot execute because node {class_type} does not exist.", f"Node ID '#{node_id}'",
                node_id=node_id, class_type=class_type if isinstance(class_type, str) else repr(class_type)))
        inputs = node.get("inputs", {})
        if inputs is not None and not isinstance(inputs, dict):
            raise _Rejected(errors.invalid_prompt(
                f"Invalid prompt: the inputs of node {node_id} must be an object", f"Node ID '#{node_id}'",
                node_id=node_id))
        if spec.output_node and (target_set is None or str(node_id) in target_set):
            outputs.append(node_id)
    if not outputs:
        raise _Rejected(errors.no_outputs())

    checker = _Validator(prompt, catalogue, services)
    valid, order = checker.walk(outputs)
    good = [o for o in outputs if valid.get(o)]
    node_errors: Dict[str, dict] = {}
    failures = []
    if checker.node_errors:
        for out in outputs:
            if valid.get(out):
                continue
            for bad in _erroneous_upstream(out, checker):
                entry = node_errors.get(bad)
                if entry is None:
                    entry = node_errors[bad] = {"errors": checker.node_errors[bad], "dependent_outputs": [],
                                                "class_type": prompt[bad]["class_type"]}
                entry["dependent_outputs"].append(out)
            failures.append(out)
    coerced = {nid: checker.coerced.get(nid) or node for nid, node in prompt.items()}
    if not good:
        details = "; ".join(
            f"{nid} ({entry['class_type']}): " + ", ".join(e["message"] for e in entry["errors"])
            for nid, entry in node_errors.items())
        return ValidationResult(False, errors.outputs_failed(details), [], node_errors, coerced, [])
    keep = _upstream_of(good, checker) if failures else None
    order = [n for n in order if keep is None or n in keep]
    return ValidationResult(True, None, good, node_errors, coerced, order)


def _upstream_of(outputs: List[str], checker: _Validator) -> set:
    seen = set(outputs)
    stack = list(outputs)
    while stack:
        for dep in checker.deps.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def _erroneous_upstream(output: str, checker: _Validator) -> List[str]:
    return [n for n in _upstream_of([output], checker) if n in checker.node_errors]
