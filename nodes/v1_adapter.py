"""Compile ComfyUI-style ("V1") node classes into the internal node model.

A V1 class declares `INPUT_TYPES()` (a classmethod returning {"required", "optional", "hidden"}), `RETURN_TYPES`,
`FUNCTION` and optional flags and hooks. The adapter reads them; the engine then treats the class like any other
node. INPUT_TYPES is re-read whenever the catalogue or a validation asks, so folder listings stay current. One
instance is created per node id and kept across runs by the executor.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, List, Optional

from graph.node_spec import COMBO, HIDDEN, OPTIONAL, REQUIRED, InputSpec, NodeSpec, OutputSpec

_SELF_NAMES = ("self", "cls", "s")


class V1DefinitionError(Exception):
    """A V1 class is missing something the engine needs (reported when its pack loads)."""


def parse_input(name: str, section: str, raw: Any) -> InputSpec:
    if section == HIDDEN:
        if isinstance(raw, (list, tuple)) and raw:  # ("*",): a hidden input of the node's own type
            return InputSpec(name, raw[0], HIDDEN, {"tuple_form": True})
        return InputSpec(name, raw, HIDDEN)
    if isinstance(raw, str):  # some packs write a bare type instead of a 1-tuple
        raw = (raw,)
    if not isinstance(raw, (list, tuple)) or not raw:
        raise V1DefinitionError(f"input {name!r}: expected (TYPE,) or (TYPE, options), got {raw!r}")
    kind = raw[0]
    options = dict(raw[1]) if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(kind, (list, tuple)):
        return InputSpec(name, COMBO, section, options, list(kind))
    if kind == COMBO and "options" in options:
        choices = list(options.pop("options") or [])
        return InputSpec(name, COMBO, section, options, choices)
    return InputSpec(name, kind, section, options)


def parse_input_types(cls: type) -> List[InputSpec]:
    declared = cls.INPUT_TYPES()
    if not isinstance(declared, dict):
        raise V1DefinitionError(f"{cls.__name__}.INPUT_TYPES() must return a dict")
    specs = []
    for section in (REQUIRED, OPTIONAL, HIDDEN):
        entries = declared.get(section) or {}
        for name in list(entries.keys()):
            specs.append(parse_input(name, section, entries[name]))
    return specs


_PROBE = "__tessera_any_input_probe__"


def claims_any_input(cls: type) -> bool:
    """Whether INPUT_TYPES has a section answering `in` for any name (rgthree's FlexibleOptionalInputType and
    similar): ComfyUI then passes every input the prompt gives, declared or not."""
    declared = cls.INPUT_TYPES()
    sections = [declared.get(section) for section in (REQUIRED, OPTIONAL)]
    return any(entries is not None and _PROBE in entries for entries in sections)


def accepted_parameters(fn: Callable) -> tuple:
    """(parameter names, takes **kwargs) of a hook, ignoring a leading self/cls."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return (), True
    names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params)
    return names, takes_all


def _class_hook(cls: type, attr: str) -> Optional[Callable]:
    """A hook called on the class: classmethod, staticmethod, or a plain function (bound to the class when its
    first parameter is named self/cls/s, as some packs forget the decorator)."""
    if not hasattr(cls, attr):
        return None
    raw = inspect.getattr_static(cls, attr)
    fn = getattr(cls, attr)
    if inspect.isfunction(raw):
        params = list(inspect.signature(raw).parameters)
        if params and params[0] in _SELF_NAMES:
            return fn.__get__(cls, cls) if not inspect.ismethod(fn) else fn
    return fn


def filter_kwargs(kwargs: dict, names: tuple, takes_all: bool) -> dict:
    return dict(kwargs) if takes_all else {k: v for k, v in kwargs.items() if k in names}


def compile_v1(cls: type, name: Optional[str] = None, python_module: str = "custom_nodes",
               display_name: Optional[str] = None) -> NodeSpec:
    """Build the NodeSpec for a V1 class (raises V1DefinitionError on a broken definition)."""
    name = name or cls.__name__
    for required in ("INPUT_TYPES", "RETURN_TYPES"):
        if not hasattr(cls, required):
            raise V1DefinitionError(f"{name}: missing {required}")
    # Without a FUNCTION (display-only nodes: notes, info panels) a class still registers, as in ComfyUI; it
    # fails, saying why, only if a prompt makes it run.
    function_name = getattr(cls, "FUNCTION", None)
    runnable = isinstance(function_name, str) and callable(getattr(cls, function_name, None))
    if function_name is not None and not runnable:
        raise V1DefinitionError(f"{name}: FUNCTION names {function_name!r}, which is not a method")
    parse_input_types(cls)  # fail early on a broken INPUT_TYPES

    return_types = tuple(cls.RETURN_TYPES)
    return_names = tuple(getattr(cls, "RETURN_NAMES", None) or ())
    tooltips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", None) or ())
    is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or ())
    outputs = tuple(OutputSpec(t, return_names[i] if i < len(return_names) else str(t),
                               tooltips[i] if i < len(tooltips) else None,
                               bool(is_list[i]) if i < len(is_list) else False)
                    for i, t in enumerate(return_types))

    def execute(instance: Any, ctx: Any, kwargs: dict) -> Any:
        if not runnable:
            raise V1DefinitionError(f"{name} defines no FUNCTION, so it cannot run (it is a display-only node)")
        return getattr(instance, function_name)(**kwargs)

    fingerprint = None
    changed = _class_hook(cls, "IS_CHANGED")
    if changed is not None:
        changed_names, changed_all = accepted_parameters(changed)

        def fingerprint(ctx: Any, literals: dict) -> Any:
            hidden = {spec.name: ctx.job.hidden_value(ctx.node_id, spec.type)
                      for spec in parse_input_types(cls) if spec.section == HIDDEN}
            return changed(**filter_kwargs({**literals, **hidden}, changed_names, changed_all))

    validate = None
    claims: frozenset = frozenset()
    wants_types = takes_all = False
    validator = _class_hook(cls, "VALIDATE_INPUTS")
    if validator is not None:
        v_names, takes_all = accepted_parameters(validator)
        wants_types = "input_types" in v_names
        claims = frozenset(n for n in v_names if n not in _SELF_NAMES and n != "input_types")

        def validate(node_id: str, literals: dict, input_types: dict, services: Any = None) -> Any:
            kwargs = filter_kwargs(literals, v_names, takes_all)
            if wants_types:
                kwargs["input_types"] = input_types
            return validator(**kwargs)

    check_lazy = None
    if callable(getattr(cls, "check_lazy_status", None)):
        def check_lazy(instance: Any, ctx: Any, kwargs: dict) -> Any:
            return instance.check_lazy_status(**kwargs)

    is_async = (runnable and inspect.iscoroutinefunction(getattr(cls, function_name))) or inspect.iscoroutinefunction(
        getattr(cls, "check_lazy_status", None))

    return NodeSpec(
        name=name,
        inputs=(),
        inputs_provider=lambda: parse_input_types(cls),
        outputs=outputs,
        execute=execute,
        display_name=display_name,
        category=getattr(cls, "CATEGORY", "sd"),
        description=getattr(cls, "DESCRIPTION", "") or "",
        python_module=python_module,
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
        create=cls,
        fingerprint=fingerprint,
        validate=validate,
        validate_claims=claims,
        validate_wants_types=wants_types,
        validate_takes_all=takes_all,
        links_as_none=True,
        any_inputs=claims_any_input(cls),
        check_lazy=check_lazy,
        is_async=is_async,
        source=cls,
    )
