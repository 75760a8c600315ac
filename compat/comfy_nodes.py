"""ComfyUI's `nodes` module names, served to packs through `nodes.__getattr__` (our own package is also `nodes`).

Packs use it three ways: read `NODE_CLASS_MAPPINGS` / `NODE_DISPLAY_NAME_MAPPINGS` / `MAX_RESOLUTION`, subclass a
built-in (`class MySave(nodes.SaveImage)`), or call one directly (`nodes.EmptyImage().execute(width=64, ...)`).
For each spec of the bound catalogue we generate a V1-style class: INPUT_TYPES returns the catalogue entry's inputs,
and `execute(**kwargs)` runs the spec with the running node's context (execution.context.current_context()).
Specs compiled from pack classes (V1 or V3) are represented by the pack class itself, as ComfyUI does. Generated classes
are cached per spec object (state in compat._runtime), so `nodes.X is nodes.X` and subclassing is stable.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict

from compat import _runtime
from execution.context import current_context, detached_context
from graph.node_spec import HIDDEN, NodeSpec
from nodes.declare import MAX_RESOLUTION

from compat.comfy_node_methods import (EXTRA_PARAMETERS, FUNCTION_ALIASES, LEGACY_FUNCTION_NAMES,  # noqa: E402
                                         POSITIONAL_ORDER)


# Combo inputs whose choice lists ComfyUI's classes also hold as class attributes (`ImageScale.upscale_methods`).
CHOICE_ATTRIBUTES = {"upscale_method": "upscale_methods", "crop": "crop_methods", "rotation": "rotations"}


def package_getattr(name: str) -> Any:
    """The module `__getattr__` compat installs on our `nodes` package: ComfyUI's `nodes` names for packs."""
    if name.startswith("_"):
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    return lookup(name)


def interrupt_processing(value: bool = True) -> None:
    """ComfyUI's `nodes.interrupt_processing`: interrupt the calling node's job."""
    from comfy import model_management  # noqa: PLC0415 - resolves once compat is installed

    model_management.interrupt_current_processing(value)


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: Any, negative: Any, latent: dict, denoise: float = 1.0, disable_noise: bool = False,
                    start_step: Any = None, last_step: Any = None, force_full_denoise: bool = False) -> tuple:
    """ComfyUI's `nodes.common_ksampler`: what KSampler runs, returning `(latent,)`; progress goes to the calling
    node."""
    from nodes.sampling import common_ksampler as run  # noqa: PLC0415 - our nodes package, already imported

    return (run(current_context(), model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                denoise, disable_noise, start_step, last_step, force_full_denoise),)


def _catalogue(fallback: bool = True) -> Any:
    """The bound catalogue; else (when `fallback`) the built-in one, built once."""
    catalogue = _runtime.catalogue()
    if catalogue is None:
        state = _runtime.state
        if state.fallback_catalogue is None and fallback:
            from nodes import builtin_catalogue
            state.fallback_catalogue = builtin_catalogue()
        catalogue = state.fallback_catalogue
    return catalogue


def is_pack_class(spec: NodeSpec) -> bool:
    """Compiled from a pack's own class (V1, or V3 with `GET_SCHEMA`): packs see that class itself."""
    source = spec.source
    if source is None:
        return False
    return (spec.create is source and hasattr(source, "INPUT_TYPES")) or hasattr(source, "GET_SCHEMA")


def class_for(spec: NodeSpec) -> type:
    """The V1-style class packs see for `spec` (the pack's own class for V1 specs)."""
    cached = _runtime.state.wrappers.get(spec.name)
    if cached is not None and cached[0] is spec:
        return cached[1]
    cls = spec.source if is_pack_class(spec) else _make_wrapper(spec)
    _runtime.state.wrappers[spec.name] = (spec, cls)
    return cls


def class_mappings() -> Dict[str, type]:
    """`nodes.NODE_CLASS_MAPPINGS`: one dict object per bound catalogue, brought up to date on every access (and
    after each pack loads), so a reference a pack kept at import time sees packs loaded later."""
    state = _runtime.state
    if state.class_mappings is None:
        state.class_mappings = {}
    mappings = state.class_mappings
    for spec in _catalogue():
        mappings[spec.name] = class_for(spec)
    return mappings


def display_mappings() -> Dict[str, str]:
    state = _runtime.state
    if state.display_mappings is None:
        state.display_mappings = {}
    mappings = state.display_mappings
    catalogue = _catalogue()
    for spec in catalogue:
        shown = catalogue.display_names.get(spec.name) or spec.display_name
        if shown:
            mappings[spec.name] = shown
    return mappings


def lookup(name: str) -> Any:
    """Resolve an attribute of `nodes` that our package does not define itself."""
    if name == "NODE_CLASS_MAPPINGS":
        return class_mappings()
    if name == "NODE_DISPLAY_NAME_MAPPINGS":
        return display_mappings()
    if name == "MAX_RESOLUTION":
        return MAX_RESOLUTION
    if name == "interrupt_processing":
        return interrupt_processing
    if name == "common_ksampler":
        return common_ksampler
    if name == "EXTENSION_WEB_DIRS":  # packs add {name: folder}; the server serves it as /extensions/<name>
        return _runtime.state.extension_web_dirs
    # class names come only from a catalogue that already exists: building one here could re-enter the import
    # of our own `nodes` submodules (the import system probes them with getattr).
    catalogue = _catalogue(fallback=False)
    spec = catalogue.get(name) if catalogue is not None else None
    if spec is None:
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    return class_for(spec)


# -- generated wrappers ------------------------------------------------------------------------------------------------
def _input_types(spec: NodeSpec) -> dict:
    services = _runtime.state.services
    sections: Dict[str, dict] = {"required": {}}
    for ispec in spec.current_inputs():
        entry = ispec.to_catalogue(services)
        sections.setdefault(ispec.section, {})[ispec.name] = entry if ispec.section == HIDDEN else tuple(entry)
    return sections


def _arguments(spec: NodeSpec, args: tuple, kwargs: dict, ctx: Any) -> dict:
    """Keyword arguments for spec.execute: positionals in the order of ComfyUI's method (else the input order),
    declared defaults for missing widgets, hidden inputs from the running job; parameters of ComfyUI's method that
    are not inputs here are accepted at their default only."""
    inputs = list(spec.current_inputs())
    by_name = {i.name: i for i in inputs}
    visible = [i for i in inputs if i.section != HIDDEN]
    order = POSITIONAL_ORDER.get(spec.name) or [i.name for i in visible]
    if len(args) > len(order):
        raise TypeError(f"{spec.name}: takes at most {len(order)} positional inputs, got {len(args)}")
    call = {}
    for name, value in zip(order, args):
        if name in kwargs:
            raise TypeError(f"{spec.name}: got multiple values for input {name!r}")
        call[name] = value
    call.update(kwargs)
    for name, default in EXTRA_PARAMETERS.get(spec.name, {}).items():
        if name in call and name not in by_name:
            value = call.pop(name)
            if value != default and not (value is None and default == []):
                raise TypeError(f"{spec.name}: {name}={value!r} is not supported here (only {default!r})")
    for ispec in visible:
        if ispec.name not in call and "default" in ispec.options:
            call[ispec.name] = ispec.options["default"]
    for ispec in inputs:
        if ispec.section == HIDDEN and ispec.name not in call:
            hidden = getattr(getattr(ctx, "job", None), "hidden_value", None)
            call[ispec.name] = hidden(ctx.node_id, ispec.type) if hidden is not None else None
    return call


class _ClassOrInstance:
    """A method callable on an instance or on the class itself (`ImageUpscaleWithModel.execute(model, image)`,
    as ComfyUI's V3 built-ins are called; a fresh instance stands in for the class)."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.function.__get__(instance if instance is not None else owner(), owner)


def _make_wrapper(spec: NodeSpec) -> type:
    def instance(self: Any) -> Any:
        if "_tessera_instance" not in self.__dict__:
            self.__dict__["_tessera_instance"] = spec.create() if spec.create is not None else None
        return self.__dict__["_tessera_instance"]

    def INPUT_TYPES(cls: type) -> dict:  # noqa: N802 - the V1 name
        return _input_types(spec)

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        """Run the built-in node inside the calling node's context (a coroutine for async built-ins); called
        outside any node, in a detached context with the engine's services."""
        ctx = current_context() or detached_context(_runtime.state.services, spec.name)
        return spec.execute(instance(self), ctx, _arguments(spec, args, kwargs, ctx))

    outputs = list(spec.outputs)
    attrs: Dict[str, Any] = {
        "__module__": "nodes",
        "__doc__": spec.description or None,
        "INPUT_TYPES": classmethod(INPUT_TYPES),
        "RETURN_TYPES": tuple(o.type for o in outputs),
        "RETURN_NAMES": tuple(o.name for o in outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip or "" for o in outputs),
        "OUTPUT_IS_LIST": tuple(o.is_list for o in outputs),
        "FUNCTION": FUNCTION_ALIASES.get(spec.name, "execute"),
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": spec.output_node,
        "INPUT_IS_LIST": spec.input_is_list,
        "NOT_IDEMPOTENT": spec.not_idempotent,
        "DEPRECATED": spec.deprecated,
        "EXPERIMENTAL": spec.experimental,
        "execute": _ClassOrInstance(execute),
        "_tessera_spec": spec,
    }
    for ispec in spec.current_inputs():  # class attributes packs read, e.g. ImageScale.upscale_methods
        if ispec.name in CHOICE_ATTRIBUTES and ispec.is_combo:
            attrs[CHOICE_ATTRIBUTES[ispec.name]] = list(ispec.choice_list(_runtime.state.services))
    for alias in (FUNCTION_ALIASES.get(spec.name), LEGACY_FUNCTION_NAMES.get(spec.name)):
        if alias:
            attrs[alias] = _ClassOrInstance(execute)
    if spec.check_lazy is not None:
        def check_lazy_status(self: Any, **kwargs: Any) -> Any:
            return spec.check_lazy(instance(self), current_context(), kwargs)
        attrs["check_lazy_status"] = check_lazy_status
    if spec.validate is not None:
        attrs["VALIDATE_INPUTS"] = classmethod(_validator(spec))
    return type(spec.name, (), attrs)


def _validator(spec: NodeSpec) -> Any:
    """VALIDATE_INPUTS taking exactly the inputs the spec's own validator claims (so the V1 adapter of a subclass
    skips the built-in checks only for those)."""
    def VALIDATE_INPUTS(cls: type, **literals: Any) -> Any:  # noqa: N802 - the V1 name
        given = {k: v for k, v in literals.items() if v is not None}  # linked (None): our validators skip them
        return spec.validate("", given, {}, _runtime.state.services)

    params = [inspect.Parameter("cls", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in sorted(spec.validate_claims)]
    VALIDATE_INPUTS.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return VALIDATE_INPUTS
