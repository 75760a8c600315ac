"""Compile ComfyUI V3 node classes (`io.ComfyNode` subclasses) into the internal node model.

What differs from V1 (nodes/v1_adapter.py):
- **Dynamic inputs.** A DynamicCombo's chosen option brings its own inputs; an Autogrow list has as many inputs as
  the user linked; a DynamicSlot, once linked, brings more. In a prompt they are flat, dotted names
  (`method`, `method.strength`; `variables.a`, `variables.b`). `live_inputs` expands a node's declared inputs
  from its own values, so validation checks the sub-inputs it really has; before `execute`, the dotted values are
  nested back into one dict per dynamic input (`method={"method": "rcas", "strength": 0.8}`,
  `variables={"a": 1, "b": 2}`), which is what V3 nodes receive.
- **Class methods and hidden values.** Nothing is instantiated: each call runs on a throw-away subclass whose
  `hidden` holds the hidden values the schema asked for (UNIQUE_ID, PROMPT, ...), so concurrent runs never share it.
- **NodeOutput.** Converted to the engine's return shape: values, `ui` (a ui object's `as_dict()`), `expand`,
  and `block_execution` (an ExecutionBlocker).
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple

from comfy_api.latest import _io as io
from execution.blocker import ExecutionBlocker
from graph.node_spec import COMBO, HIDDEN, OPTIONAL, REQUIRED, InputSpec, NodeSpec, OutputSpec
from nodes.v1_adapter import accepted_parameters, filter_kwargs, parse_input

_EMPTY = object()  # path marker: a dynamic input with nothing given becomes {}


def is_v3(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, io.ComfyNode)


# -- inputs --------------------------------------------------------------------------------------------------------------
def _plain_spec(item: io.Input, name: str, section: Optional[str] = None) -> InputSpec:
    declared_section, (kind, options) = item.v1_entry()
    return parse_input(name, section or declared_section, (kind, options))


def _hidden_specs(schema: io.Schema) -> List[InputSpec]:
    return [InputSpec(io.Hidden(member).name, io.Hidden(member).value, HIDDEN) for member in schema.hidden]


def catalogue_inputs(schema: io.Schema) -> List[InputSpec]:
    """The inputs as /object_info shows them: dynamic inputs in their V3 form (the editor expands them)."""
    return [_plain_spec(item, item.id) for item in schema.inputs] + _hidden_specs(schema)


def expand_inputs(inputs: list, live: dict, prefix: str = "") -> Tuple[List[InputSpec], Dict[str, Any]]:
    """(input specs, nesting paths) of `inputs` for a node whose prompt inputs are `live`.

    A path maps a flat input name to where its value goes in the nested arguments ("method" -> "method.method");
    `_EMPTY` paths give {} for a dynamic input with nothing given. Inputs at the top level need no path.
    """
    specs: List[InputSpec] = []
    paths: Dict[str, Any] = {}
    for item in inputs:
        flat = f"{prefix}.{item.id}" if prefix else item.id
        if isinstance(item, io.DynamicCombo.Input):
            section = OPTIONAL if item.optional else REQUIRED
            options = {k: v for k, v in item.as_dict().items() if k not in ("optional", "options")}
            specs.append(InputSpec(flat, COMBO, section, options, [option.key for option in item.options]))
            paths[flat] = f"{flat}.{item.id}"
            chosen = next((o for o in item.options if o.key == live.get(flat)), None)
            if chosen is not None:
                more, more_paths = expand_inputs(chosen.inputs, live, flat)
                specs += more
                paths.update(more_paths)
        elif isinstance(item, io.Autogrow.Input):
            template = item.template
            required_template = not template.input.optional
            given = False
            for index, name in enumerate(template.names):
                sub = f"{flat}.{name}"
                section = REQUIRED if index < template.min and required_template else OPTIONAL
                specs.append(_plain_spec(template.input_named(name), sub, section))
                if sub in live:
                    paths[sub] = sub
                    given = True
            if not given:
                paths[flat] = _EMPTY
        elif isinstance(item, io.DynamicSlot.Input):
            specs.append(_plain_spec(item.slot, flat, OPTIONAL))
            if flat in live:
                paths[flat] = f"{flat}.{item.id}"
                more, more_paths = expand_inputs(item.inputs, live, flat)
                specs += more
                paths.update(more_paths)
        else:
            specs.append(_plain_spec(item, flat))
            if prefix:
                paths[flat] = flat
    return specs, paths


def nest(values: dict, paths: Dict[str, Any]) -> dict:
    """Flat dotted values -> the nested arguments V3 nodes receive (see `expand_inputs`)."""
    if not paths:
        return dict(values)
    flat = dict(values)
    nested: dict = {}
    for key, path in paths.items():
        if path is _EMPTY:
            flat.pop(key, None)
            nested[key] = {}
            continue
        parts = path.split(".")
        holder = nested
        for part in parts[:-1]:
            holder = holder.setdefault(part, {})
        holder[parts[-1]] = flat.pop(key, None)
    flat.update(nested)
    return flat


# -- running -----------------------------------------------------------------------------------------------------------
def _with_hidden(cls: type, hidden: dict) -> type:
    """A throw-away subclass carrying this call's hidden values as `cls.hidden`."""
    return type(cls.__name__, (cls,), {"hidden": io.HiddenHolder.from_dict(hidden), "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


def _engine_return(output: io.NodeOutput, schema: io.Schema, name: str) -> Any:
    if output.block_execution is not None:
        return ExecutionBlocker(output.block_execution)
    if output.expand is not None and not schema.enable_expand:
        raise RuntimeError(f"{name} returned an expansion, but its schema does not set enable_expand=True")
    ui = output.ui.as_dict() if isinstance(output.ui, io._UIOutput) else output.ui
    return {"result": tuple(output.args), "ui": ui, "expand": output.expand}


def compile_v3(cls: type, name: Optional[str] = None, python_module: str = "custom_nodes",
               display_name: Optional[str] = None) -> NodeSpec:
    """Build the NodeSpec for a V3 class (raises on a broken schema)."""
    schema = cls.GET_SCHEMA()
    name = name or schema.node_id
    hidden_names = {spec.name: spec.type for spec in _hidden_specs(schema)}
    if cls.RELATIVE_PYTHON_MODULE is None:
        cls.RELATIVE_PYTHON_MODULE = python_module

    def live_schema() -> io.Schema:
        return cls.FINALIZE_SCHEMA()  # combos listing folders are read fresh, as V1 INPUT_TYPES are

    def live_inputs(node_inputs: dict) -> List[InputSpec]:
        specs, _ = expand_inputs(live_schema().inputs, node_inputs)
        return specs + _hidden_specs(schema)

    def arguments(kwargs: dict) -> Tuple[dict, dict]:
        hidden = {kind: kwargs.pop(key) for key, kind in hidden_names.items() if key in kwargs}
        _, paths = expand_inputs(live_schema().inputs, kwargs)
        return nest(kwargs, paths), hidden

    def execute(_instance: Any, ctx: Any, kwargs: dict) -> Any:
        args, hidden = arguments(dict(kwargs))
        raw = _with_hidden(cls, hidden).execute(**args)
        if inspect.isawaitable(raw):
            async def finish() -> Any:
                return _engine_return(io.NodeOutput.of(await raw), schema, name)
            return finish()
        return _engine_return(io.NodeOutput.of(raw), schema, name)

    fingerprint = validate = check_lazy = None
    claims: frozenset = frozenset()
    wants_types = takes_all = False
    if io.overrides(cls, "fingerprint_inputs"):
        fp_names, fp_all = accepted_parameters(cls.fingerprint_inputs)

        def fingerprint(ctx: Any, literals: dict) -> Any:
            hidden = {kind: ctx.job.hidden_value(ctx.node_id, kind) for kind in hidden_names.values()}
            return _with_hidden(cls, hidden).fingerprint_inputs(**filter_kwargs(literals, fp_names, fp_all))
    if io.overrides(cls, "validate_inputs"):
        v_names, takes_all = accepted_parameters(cls.validate_inputs)
        wants_types = "input_types" in v_names
        claims = frozenset(n for n in v_names if n not in ("cls", "input_types"))

        def validate(node_id: str, literals: dict, input_types: dict, services: Any = None) -> Any:
            call = filter_kwargs(literals, v_names, takes_all)
            if wants_types:
                call["input_types"] = input_types
            return cls.validate_inputs(**call)
    has_lazy = any(getattr(nested, "lazy", False) for item in schema.inputs for nested in item.get_all())
    if io.overrides(cls, "check_lazy_status") or has_lazy:
        def check_lazy(_instance: Any, ctx: Any, kwargs: dict) -> Any:
            args, hidden = arguments(dict(kwargs))
            return _with_hidden(cls, hidden).check_lazy_status(**args)

    extra: Dict[str, Any] = {"is_input_list": schema.is_input_list}
    if any(isinstance(o, io.MatchType.Output) for o in schema.outputs):
        extra["output_matchtypes"] = [o.template.template_id if isinstance(o, io.MatchType.Output) else None
                                      for o in schema.outputs]
    if schema.search_aliases:
        extra["search_aliases"] = list(schema.search_aliases)
    if schema.is_dev_only:
        extra["dev_only"] = True
    if schema.is_api_node:
        extra["api_node"] = True

    return NodeSpec(
        name=name,
        inputs=(),
        inputs_provider=lambda: catalogue_inputs(live_schema()),
        live_inputs=live_inputs,
        outputs=tuple(OutputSpec(o.io_type, o.display_name or o.io_type, o.tooltip, bool(o.is_output_list))
                      for o in schema.outputs),
        execute=execute,
        display_name=display_name or schema.display_name,
        category=schema.category,
        description=schema.description or "",
        python_module=cls.RELATIVE_PYTHON_MODULE or python_module,
        output_node=schema.is_output_node,
        input_is_list=schema.is_input_list,
        not_idempotent=schema.not_idempotent,
        deprecated=schema.is_deprecated,
        experimental=schema.is_experimental,
        fingerprint=fingerprint,
        validate=validate,
        validate_claims=claims,
        validate_wants_types=wants_types,
        validate_takes_all=takes_all,
        links_as_none=True,
        any_inputs=schema.accept_all_inputs,
        check_lazy=check_lazy,
        is_async=inspect.iscoroutinefunction(cls.execute) or inspect.iscoroutinefunction(cls.check_lazy_status),
        catalogue_extra=extra,
        source=cls,
    )
