"""The native way to declare a node: inputs declared once, with their types, bounds and docs.

    @node(category="utils/math", outputs=[Output("INT", tooltip="a op b")])
    class IntMath:
        '''Integer arithmetic on two values.'''              # the node's description
        a = Int(default=0, tooltip="Left operand.")
        b = Int(default=0, tooltip="Right operand.")
        operation = Combo(["add", "subtract"], tooltip="What to compute.")

        def run(self, ctx, a, b, operation):                 # ctx: execution.context.NodeContext
            return (a + b if operation == "add" else a - b,)

Inputs are class attributes, in the order the editor shows them. `run` may be `async def`. Optional hooks:
`fingerprint(self, ctx, **literals)` (re-run when it changes), `validate(self, services, **literals) -> True | str`
(it claims the inputs it names: their built-in bound checks are skipped), and
`lazy_needs(self, ctx, **inputs) -> [names]` for inputs declared `lazy=True`. The decorator compiles all of this
into a `graph.node_spec.NodeSpec` stored as `cls.SPEC`.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from graph.node_spec import (BOOLEAN, COMBO, FLOAT, HIDDEN, INT, OPTIONAL, REQUIRED, STRING, InputSpec,
                             NodeSpec, OutputSpec)

MAX_RESOLUTION = 16384


class Input:
    """A declared input. Use the helpers below (Int, Float, String, Boolean, Combo, Socket, Hidden)."""

    def __init__(self, type: Any, *, tooltip: Optional[str] = None, optional: bool = False, lazy: bool = False,
                 force_input: bool = False, raw_link: bool = False, choices: Any = None,
                 section: Optional[str] = None, **options: Any) -> None:
        self.type = type
        self.name = ""
        self.section = section or (OPTIONAL if optional else REQUIRED)
        self.choices = choices
        opts = {k: v for k, v in options.items() if v is not None}
        if tooltip:
            opts["tooltip"] = tooltip
        if lazy:
            opts["lazy"] = True
        if force_input:
            opts["forceInput"] = True
        if raw_link:
            opts["rawLink"] = True
        self.options = opts

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def spec(self) -> InputSpec:
        return InputSpec(self.name, self.type, self.section, dict(self.options), self.choices)


def Int(default: int = 0, min: int = -(2 ** 63), max: int = 2 ** 63 - 1, step: int = 1, *,
        control_after_generate: bool = False, display: Optional[str] = None, **kw: Any) -> Input:
    return Input(INT, default=default, min=min, max=max, step=step,
                 control_after_generate=control_after_generate or None, display=display, **kw)


def Float(default: float = 0.0, min: float = -1e18, max: float = 1e18, step: float = 0.01, *,
          round: Union[float, bool, None] = None, **kw: Any) -> Input:
    return Input(FLOAT, default=default, min=min, max=max, step=step, round=round, **kw)


def String(default: str = "", *, multiline: bool = False, placeholder: Optional[str] = None, **kw: Any) -> Input:
    return Input(STRING, default=default, multiline=multiline or None, placeholder=placeholder, **kw)


def Boolean(default: bool = False, *, label_on: Optional[str] = None, label_off: Optional[str] = None,
            **kw: Any) -> Input:
    return Input(BOOLEAN, default=default, label_on=label_on, label_off=label_off, **kw)


def Combo(choices: Union[Sequence[str], Callable[[Any], Iterable[str]]], default: Optional[str] = None,
          **kw: Any) -> Input:
    """A pick-one list; `choices` may be a callable `services -> list` (e.g. a model folder, read fresh)."""
    if default is None and not callable(choices) and choices:
        default = list(choices)[0]
    return Input(COMBO, choices=choices if callable(choices) else list(choices), default=default, **kw)


def Socket(type: str, **kw: Any) -> Input:
    """A linked input of a socket type ("IMAGE", "MODEL", "*", "INT,FLOAT", ...)."""
    return Input(type, **kw)


def Hidden(kind: str) -> Input:
    """A hidden input filled by the engine: UNIQUE_ID, PROMPT, DYNPROMPT or EXTRA_PNGINFO."""
    return Input(kind, section=HIDDEN)


class Output:
    def __init__(self, type: str, name: Optional[str] = None, tooltip: Optional[str] = None,
                 is_list: bool = False) -> None:
        self.spec = OutputSpec(type, name or type, tooltip, is_list)


def node(name: Optional[str] = None, *, category: str, outputs: Sequence[Output] = (),
         display_name: Optional[str] = None, description: Optional[str] = None, output_node: bool = False,
         input_is_list: bool = False, not_idempotent: bool = False, deprecated: bool = False,
         experimental: bool = False, python_module: str = "nodes") -> Callable[[type], type]:
    """Compile a class into a NodeSpec (stored as `cls.SPEC`)."""

    def build(cls: type) -> type:
        declared = [value for value in vars(cls).values() if isinstance(value, Input)]
        impl = cls()
        run = impl.run
        is_async = inspect.iscoroutinefunction(cls.run)

        def execute(_instance: Any, ctx: Any, kwargs: dict) -> Any:
            return run(ctx, **kwargs)

        fingerprint = validate = check_lazy = None
        claims: frozenset = frozenset()
        if hasattr(cls, "fingerprint"):
            def fingerprint(ctx: Any, literals: dict) -> Any:
                return impl.fingerprint(ctx, **literals)
        if hasattr(cls, "validate"):
            params = inspect.signature(cls.validate).parameters
            claims = frozenset(p for p in params if p not in ("self", "services"))

            def validate(node_id: str, literals: dict, input_types: dict, services: Any = None) -> Any:
                return impl.validate(services, **literals)
        if hasattr(cls, "lazy_needs"):
            is_async = is_async or inspect.iscoroutinefunction(cls.lazy_needs)

            def check_lazy(_instance: Any, ctx: Any, kwargs: dict) -> Any:
                return impl.lazy_needs(ctx, **kwargs)

        cls.SPEC = NodeSpec(
            name=name or cls.__name__,
            inputs=tuple(i.spec() for i in declared),
            outputs=tuple(o.spec for o in outputs),
            execute=execute,
            display_name=display_name,
            category=category,
            description=description or inspect.cleandoc(cls.__doc__ or ""),
            python_module=python_module,
            output_node=output_node,
            input_is_list=input_is_list,
            not_idempotent=not_idempotent,
            deprecated=deprecated,
            experimental=experimental,
            fingerprint=fingerprint,
            validate=validate,
            validate_claims=claims,
            check_lazy=check_lazy,
            is_async=is_async,
            source=cls,
        )
        return cls

    return build


def specs_of(classes: Iterable[type]) -> list:
    return [cls.SPEC for cls in classes]
