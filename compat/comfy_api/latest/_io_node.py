"""The node side of the V3 schema: Hidden values, Schema, ComfyNode, NodeOutput, NodeReplace."""
from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass, field
from typing import Any, List, Optional

from comfy_api.latest._io_dynamic import DynamicInput, _v1_inputs

# -- hidden values -----------------------------------------------------------------------------------------------------
class Hidden(str, enum.Enum):
    """Values a node asks the engine for instead of the user."""
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """`cls.hidden` while a V3 node runs: the hidden values it asked for (None for the others)."""

    def __init__(self, unique_id: Any = None, prompt: Any = None, extra_pnginfo: Any = None, dynprompt: Any = None,
                 auth_token_comfy_org: Any = None, api_key_comfy_org: Any = None, **_: Any):
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt
        self.auth_token_comfy_org = auth_token_comfy_org
        self.api_key_comfy_org = api_key_comfy_org

    def __getattr__(self, key: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, values: Optional[dict]) -> "HiddenHolder":
        values = values or {}
        return cls(**{member.name: values.get(member.value, values.get(member)) for member in Hidden})


# -- the schema ----------------------------------------------------------------------------------------------------------
@dataclass
class Schema:
    """What a V3 node declares: its id, where it sits in the menu, its sockets and flags."""
    node_id: str
    display_name: Optional[str] = None
    category: str = "sd"
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    description: str = ""
    search_aliases: list = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    essentials_category: Optional[str] = None
    price_badge: Any = None

    def validate(self) -> None:
        """Ids must be unique among the inputs (nested ones included) and among the outputs."""
        input_ids: List[str] = []
        for item in self.inputs:
            if not isinstance(item, DynamicInput):
                input_ids.extend(nested.id for nested in item.get_all())
            else:
                input_ids.append(item.id)
        output_ids = [o.id for o in self.outputs]
        problems = []
        for label, ids in (("Input", input_ids), ("Output", output_ids)):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                problems.append(f"{label} ids must be unique, but {repeated} are not.")
        if problems:
            raise ValueError(" ".join(problems))
        for item in list(self.inputs) + list(self.outputs):
            item.validate()

    def finalize(self) -> None:
        """Output nodes get PROMPT and EXTRA_PNGINFO; outputs without an id get one from their place."""
        self.inputs = list(self.inputs or [])
        self.outputs = list(self.outputs or [])
        self.hidden = list(self.hidden or [])
        wanted = []
        if self.is_output_node:
            wanted += [Hidden.prompt, Hidden.extra_pnginfo]
        if self.is_api_node:
            wanted += [Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org]
        for member in wanted:
            if member not in self.hidden:
                self.hidden.append(member)
        for index, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def v1_input_types(self) -> dict:
        sections = _v1_inputs(self.inputs)
        for member in self.hidden:
            member = Hidden(member)
            sections.setdefault("hidden", {})[member.name] = member.value
        return sections


# -- the node class ------------------------------------------------------------------------------------------------------
class _classproperty:
    def __init__(self, getter: Any) -> None:
        self.getter = getter

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


class ComfyNode:
    """Base class of V3 nodes: override `define_schema` and `execute` (classmethods); optionally
    `validate_inputs`, `fingerprint_inputs` and `check_lazy_status`. While the node runs, `cls.hidden` holds the
    hidden values its schema asked for."""

    RELATIVE_PYTHON_MODULE: Optional[str] = None
    SCHEMA: Optional[Schema] = None
    hidden: Optional[HiddenHolder] = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> "NodeOutput":
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list:
        """By default every lazy input not evaluated yet (None) is needed."""
        return [name for name, value in kwargs.items() if value is None]

    @classmethod
    def VALIDATE_CLASS(cls) -> None:  # noqa: N802 - ComfyUI's name
        for name in ("define_schema", "execute"):
            if not overrides(cls, name):
                raise TypeError(f"V3 node class {cls.__name__} defines no {name}")

    @classmethod
    def FINALIZE_SCHEMA(cls) -> Schema:  # noqa: N802
        schema = cls.define_schema()
        schema.finalize()
        return schema

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802
        cls.VALIDATE_CLASS()
        schema = cls.FINALIZE_SCHEMA()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def INPUT_TYPES(cls) -> dict:  # noqa: N802
        return cls.FINALIZE_SCHEMA().v1_input_types()

    @classmethod
    def GET_BASE_CLASS(cls) -> type:  # noqa: N802
        return ComfyNode

    # V1 attributes, read from the schema (packs and the catalogue look at them)
    RETURN_TYPES = _classproperty(lambda cls: tuple(o.io_type for o in cls.FINALIZE_SCHEMA().outputs))
    RETURN_NAMES = _classproperty(lambda cls: tuple(o.display_name or o.io_type
                                                    for o in cls.FINALIZE_SCHEMA().outputs))
    OUTPUT_IS_LIST = _classproperty(lambda cls: tuple(o.is_output_list for o in cls.FINALIZE_SCHEMA().outputs))
    OUTPUT_TOOLTIPS = _classproperty(lambda cls: tuple(o.tooltip for o in cls.FINALIZE_SCHEMA().outputs))
    CATEGORY = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().category)
    DESCRIPTION = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().description)
    OUTPUT_NODE = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().is_output_node)
    INPUT_IS_LIST = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().is_input_list)
    NOT_IDEMPOTENT = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().not_idempotent)
    DEPRECATED = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().is_deprecated)
    EXPERIMENTAL = _classproperty(lambda cls: cls.FINALIZE_SCHEMA().is_experimental)
    FUNCTION = _classproperty(lambda cls: "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute)
                              else "EXECUTE_NORMALIZED")

    @classmethod
    def EXECUTE_NORMALIZED(cls, *args: Any, **kwargs: Any) -> "NodeOutput":  # noqa: N802
        return NodeOutput.of(cls.execute(*args, **kwargs))

    @classmethod
    async def EXECUTE_NORMALIZED_ASYNC(cls, *args: Any, **kwargs: Any) -> "NodeOutput":  # noqa: N802
        return NodeOutput.of(await cls.execute(*args, **kwargs))


def overrides(cls: type, name: str) -> bool:
    """Whether a node class (or a base below ComfyNode) defines `name` rather than inheriting ComfyNode's."""
    mine = inspect.getattr_static(cls, name, None)
    base = inspect.getattr_static(ComfyNode, name, None)
    return mine is not None and getattr(mine, "__func__", mine) is not getattr(base, "__func__", base)


class _UIOutput:
    """What a node shows on itself (images, text); `as_dict()` is the `ui` part of its result."""

    def as_dict(self) -> dict:
        raise NotImplementedError


class NodeOutput:
    """A V3 node's return: the output values in order, and optionally `ui`, `expand` (a graph replacing the node)
    or `block_execution` (a message: downstream nodes do not run)."""

    def __init__(self, *args: Any, ui: Any = None, expand: Optional[dict] = None,
                 block_execution: Optional[str] = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> Optional[tuple]:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict) -> "NodeOutput":
        result = data.get("result", ())
        if type(result).__name__ == "ExecutionBlocker":
            return cls(block_execution=result.message)
        return cls(*(result or ()), ui=data.get("ui"), expand=data.get("expand"))

    @classmethod
    def of(cls, value: Any) -> "NodeOutput":
        """What `execute` returned, as a NodeOutput (tuples, V1 dicts and blockers are accepted too)."""
        if value is None:
            return cls()
        if isinstance(value, NodeOutput):
            return value
        if isinstance(value, tuple):
            return cls(*value)
        if isinstance(value, dict):
            return cls.from_dict(value)
        if type(value).__name__ == "ExecutionBlocker":
            return cls(block_execution=value.message)
        raise TypeError(f"a V3 node returned {type(value).__name__}; expected io.NodeOutput")

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class NodeReplace:
    """A suggested replacement of a deprecated node by another (shown by the editor)."""

    def __init__(self, new_node_id: str, old_node_id: str, old_widget_ids: Optional[list] = None,
                 input_mapping: Optional[list] = None, output_mapping: Optional[list] = None):
        self.new_node_id, self.old_node_id, self.old_widget_ids = new_node_id, old_node_id, old_widget_ids
        self.input_mapping, self.output_mapping = input_mapping, output_mapping

    def as_dict(self) -> dict:
        return {"new_node_id": self.new_node_id, "old_node_id": self.old_node_id,
                "old_widget_ids": self.old_widget_ids, "input_mapping": self.input_mapping,
                "output_mapping": self.output_mapping}

