"""The one internal node model.

Every node the engine can run -- built-in nodes declared natively (nodes/declare.py) and ComfyUI-style V1 classes
(nodes/v1_adapter.py) -- is compiled into a `NodeSpec`. Validation, the scheduler and the catalogue (/object_info)
read only this model, so they never care how a node was written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

# Widget types: inputs of these types may be given as literals in a prompt.
INT, FLOAT, STRING, BOOLEAN, COMBO = "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"
WIDGET_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})
ANY = "*"

# Hidden inputs the engine fills in from the job, never from the prompt.
HIDDEN_KINDS = frozenset({"UNIQUE_ID", "PROMPT", "DYNPROMPT", "EXTRA_PNGINFO",
                          "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"})

REQUIRED, OPTIONAL, HIDDEN = "required", "optional", "hidden"
SECTIONS = (REQUIRED, OPTIONAL, HIDDEN)

# Option names with a meaning to the engine; anything else in `options` is passed through to the catalogue.
KNOWN_OPTIONS = ("default", "min", "max", "step", "round", "multiline", "tooltip", "lazy", "forceInput",
                 "control_after_generate", "image_upload", "rawLink")


@dataclass
class InputSpec:
    """One input of a node.

    `type` is the socket or widget type ("INT", "IMAGE", "*", "A,B", or a str subclass with its own `__ne__`);
    combos have type COMBO and their `choices` (a list, or a callable `services -> list` for folder listings).
    For hidden inputs `type` is the hidden kind (UNIQUE_ID, PROMPT, ...). `options` holds the catalogue options
    (default, min, max, step, round, multiline, tooltip, lazy, forceInput, ...) exactly as /object_info shows them.
    """
    name: str
    type: Any
    section: str = REQUIRED
    options: dict = field(default_factory=dict)
    choices: Any = None

    @property
    def is_combo(self) -> bool:
        return self.type == COMBO if isinstance(self.type, str) else False

    @property
    def is_widget(self) -> bool:
        return isinstance(self.type, str) and type(self.type) is str and self.type in WIDGET_TYPES

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy"))

    @property
    def raw_link(self) -> bool:
        return bool(self.options.get("rawLink"))

    def choice_list(self, services: Any = None) -> list:
        """The combo's current choices (folder listings are read fresh each call)."""
        if callable(self.choices):
            return list(self.choices(services))
        return list(self.choices or ())

    def to_catalogue(self, services: Any = None) -> Any:
        """The /object_info form: `[TYPE]`, `[TYPE, options]`, `[[choices...], options]`, or the hidden kind."""
        if self.section == HIDDEN:
            return [self.type] if self.options.get("tuple_form") else self.type
        head = self.choice_list(services) if self.is_combo else (str(self.type) if isinstance(self.type, str)
                                                                     else self.type)
        return [head, dict(self.options)] if self.options else [head]


@dataclass
class OutputSpec:
    type: Any
    name: str
    tooltip: Optional[str] = None
    is_list: bool = False


@dataclass
class NodeSpec:
    """A node class as the engine sees it.

    Behaviour hooks (all optional but `execute`):
      create()                                  -> instance kept per node id across runs (None for stateless nodes)
      execute(instance, ctx, inputs)            -> raw return value, or an awaitable of it
      fingerprint(ctx, literal_inputs)          -> change fingerprint (IS_CHANGED); NaN or an exception = always re-run
      validate(node_id, literals, input_types, services) -> True, or a message (VALIDATE_INPUTS); may be awaitable
      check_lazy(instance, ctx, inputs)         -> names of lazy inputs still needed; may be awaitable
    `validate_claims` names the inputs `validate` checks itself: the built-in bound and combo checks skip them.
    `validate_wants_types` means linked inputs are not type-checked; their received types go to `validate`.
    `links_as_none` passes linked inputs to `validate` and `fingerprint` as None (V1/V3 classes: ComfyUI gives
    these hooks constants only) instead of leaving them out.
    """
    name: str
    inputs: Sequence[InputSpec]
    outputs: Sequence[OutputSpec]
    execute: Callable[..., Any]
    display_name: Optional[str] = None
    category: str = ""
    description: str = ""
    python_module: str = "nodes"
    output_node: bool = False
    input_is_list: bool = False
    not_idempotent: bool = False
    deprecated: bool = False
    experimental: bool = False
    create: Optional[Callable[[], Any]] = None
    fingerprint: Optional[Callable[..., Any]] = None
    validate: Optional[Callable[..., Any]] = None
    validate_claims: frozenset = frozenset()
    validate_wants_types: bool = False
    validate_takes_all: bool = False
    links_as_none: bool = False  # ComfyUI classes: linked inputs reach VALIDATE_INPUTS and IS_CHANGED as None
    any_inputs: bool = False  # inputs it does not declare are passed too (a pack's "flexible" optional section)
    check_lazy: Optional[Callable[..., Any]] = None
    is_async: bool = False  # execute or check_lazy is a coroutine function: run the node as a task
    # V1 classes recompute INPUT_TYPES (folder listings); native specs leave this None and use `inputs`.
    inputs_provider: Optional[Callable[[], Sequence[InputSpec]]] = None
    # Nodes whose inputs depend on a node's own values (V3 dynamic inputs: a combo that reveals sub-inputs, a list
    # of inputs that grows) expand them here: prompt inputs -> the inputs that node has, under dotted names.
    live_inputs: Optional[Callable[[dict], Sequence[InputSpec]]] = None
    catalogue_extra: Optional[dict] = None  # further /object_info fields (V3: output_matchtypes, search_aliases)
    source: Any = None  # the class the spec was compiled from, for compat lookups

    def current_inputs(self) -> Sequence[InputSpec]:
        return self.inputs_provider() if self.inputs_provider is not None else self.inputs

    def inputs_for(self, node_inputs: dict) -> Sequence[InputSpec]:
        """The inputs one node of this class has, given its prompt inputs (the same for most classes)."""
        if self.live_inputs is not None:
            return self.live_inputs(node_inputs)
        return self.current_inputs()

    def input_map(self, inputs: Optional[Sequence[InputSpec]] = None) -> dict:
        return {i.name: i for i in (inputs if inputs is not None else self.current_inputs())}

    def to_catalogue(self, services: Any = None) -> dict:
        """This node's /object_info entry (docs/architecture.md §4.2)."""
        sections: dict = {REQUIRED: {}, OPTIONAL: {}, HIDDEN: {}}
        for spec in self.current_inputs():
            sections[spec.section][spec.name] = spec.to_catalogue(services)
        inputs = {k: v for k, v in sections.items() if v or k == REQUIRED}
        entry = {
            "input": inputs,
            "input_order": {k: list(v) for k, v in inputs.items()},
            "output": [str(o.type) if isinstance(o.type, str) else o.type for o in self.outputs],
            "output_is_list": [o.is_list for o in self.outputs],
            "output_name": [o.name for o in self.outputs],
            "output_tooltips": [o.tooltip for o in self.outputs],
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
            "deprecated": self.deprecated,
            "experimental": self.experimental,
        }
        if self.catalogue_extra:
            entry.update(self.catalogue_extra)
        return entry
