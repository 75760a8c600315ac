"""Sockets of several types and dynamic inputs of the V3 schema: MultiType, MatchType, Autogrow, DynamicCombo,
DynamicSlot. How a node's dynamic inputs are expanded from its values is compat/v3_adapter.py."""
from __future__ import annotations

import copy
from typing import Any, Iterable, List, Optional

from comfy_api.latest._io_sockets import (AnyType, ComfyTypeI, ComfyTypeIO, Input, Output, WidgetInput, _ComfyType,
                                          _pruned, comfytype)

# -- sockets of several types, and dynamic inputs -------------------------------------------------------------------------
def _kind_of(item: Any) -> Any:
    return item if isinstance(item, type) else type(item)


@comfytype(io_type="COMFY_MULTITYPED_V3")
class MultiType:
    """An input accepting several kinds; given an Input instead of an id, that input's widget is kept."""
    Type = Any

    class Input(Input):
        def __init__(self, id: Any, types: list, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, extra_dict: Optional[dict] = None,
                     raw_link: Optional[bool] = None, advanced: Optional[bool] = None):
            self.input_override = None
            if isinstance(id, Input):
                self.input_override = copy.copy(id)
                optional = True if id.optional is True else optional
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                if isinstance(self.input_override, WidgetInput):
                    self.input_override.widget_type = self.input_override.get_io_type()
                id = id.id
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self._io_types = list(types)

        @property
        def io_types(self) -> list:
            return [_kind_of(t) for t in self._io_types]

        def get_io_type(self) -> str:
            names = [t.io_type for t in self.io_types]
            if self.input_override is not None:
                names.insert(0, self.input_override.get_io_type())
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict:
            base = super().as_dict()
            return {**self.input_override.as_dict(), **base} if self.input_override is not None else base


@comfytype(io_type="COMFY_MATCHTYPE_V3")
class MatchType(ComfyTypeIO):
    """Sockets sharing one template take whichever of its allowed types is linked (the editor tracks which)."""

    class Template:
        def __init__(self, template_id: str, allowed_types: Any = None):
            if allowed_types is None:
                allowed_types = [AnyType]
            if not isinstance(allowed_types, Iterable):
                allowed_types = [allowed_types]
            for kind in allowed_types:
                if not issubclass(_kind_of(kind), _ComfyType):
                    raise ValueError(f"MatchType.Template {template_id!r}: allowed types must be ComfyTypes, got "
                                     f"{kind!r}")
            self.template_id = template_id
            self.allowed_types = list(allowed_types)

        def as_dict(self) -> dict:
            return {"template_id": self.template_id,
                    "allowed_types": ",".join(_kind_of(t).io_type for t in self.allowed_types)}

    class Input(Input):
        def __init__(self, id: str, template: "MatchType.Template", display_name: Optional[str] = None,
                     optional: bool = False, tooltip: Optional[str] = None, lazy: Optional[bool] = None,
                     extra_dict: Optional[dict] = None, raw_link: Optional[bool] = None,
                     advanced: Optional[bool] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self.template = template

        def as_dict(self) -> dict:
            return {**super().as_dict(), "template": self.template.as_dict()}

    class Output(Output):
        def __init__(self, template: "MatchType.Template", id: Optional[str] = None,
                     display_name: Optional[str] = None, tooltip: Optional[str] = None,
                     is_output_list: bool = False):
            if not id and not display_name:
                display_name = "MATCHTYPE"
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template

        def as_dict(self) -> dict:
            return {**super().as_dict(), "template": self.template.as_dict()}


class DynamicInput(Input):
    """An input that stands for further inputs, decided per node by its values (see compat/v3_adapter.py)."""


class DynamicOutput(Output):
    pass


def _v1_inputs(inputs: list) -> dict:
    """The V1 INPUT_TYPES dict of a list of V3 inputs ({"required": {...}, "optional": {...}})."""
    sections: dict = {"required": {}}
    for item in inputs:
        section, entry = item.v1_entry()
        sections.setdefault(section, {})[item.id] = entry
    return sections


@comfytype(io_type="COMFY_AUTOGROW_V3")
class Autogrow(ComfyTypeI):
    """A list of inputs that grows as the user links them: `prefix0, prefix1, ...` or a fixed list of names. The
    node receives them as one dict, name -> value."""
    Type = dict
    _MaxNames = 100

    class _Template:
        def __init__(self, input: Input):
            if isinstance(input, DynamicInput):
                raise ValueError("Autogrow: a dynamic input cannot be the template")
            self.input = copy.copy(input)
            if isinstance(self.input, WidgetInput):
                self.input.force_input = True
            self.names: List[str] = []
            self.min = 1

        def input_named(self, name: str) -> Input:
            made = copy.copy(self.input)
            made.id = name
            return made

        def get_all(self) -> list:
            return [self.input_named(name) for name in self.names]

        def as_dict(self) -> dict:
            return {"input": _v1_inputs([self.input])}

        def validate(self) -> None:
            self.input.validate()

    class TemplatePrefix(_Template):
        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10):
            super().__init__(input)
            if min < 0 or max < 1 or max > Autogrow._MaxNames:
                raise ValueError(f"Autogrow.TemplatePrefix: need 0 <= min and 1 <= max <= {Autogrow._MaxNames}")
            self.prefix, self.min, self.max = prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]

        def as_dict(self) -> dict:
            return {**super().as_dict(), "prefix": self.prefix, "min": self.min, "max": self.max}

    class TemplateNames(_Template):
        def __init__(self, input: Input, names: list, min: int = 1):
            super().__init__(input)
            if min < 0:
                raise ValueError("Autogrow.TemplateNames: min must be >= 0")
            self.names = list(names)[:Autogrow._MaxNames]
            self.min = min

        def as_dict(self) -> dict:
            return {**super().as_dict(), "names": self.names, "min": self.min}

    class Input(DynamicInput):
        def __init__(self, id: str, template: Any, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, extra_dict: Optional[dict] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def as_dict(self) -> dict:
            return {**super().as_dict(), "template": self.template.as_dict()}

        def get_all(self) -> list:
            return [self] + self.template.get_all()

        def validate(self) -> None:
            self.template.validate()


@comfytype(io_type="COMFY_DYNAMICCOMBO_V3")
class DynamicCombo(ComfyTypeI):
    """A combo whose chosen option brings its own inputs. The node receives one dict: the choice under the input's
    own id, and the chosen option's inputs under theirs."""
    Type = dict

    class Option:
        def __init__(self, key: str, inputs: list):
            self.key = key
            self.inputs = list(inputs)

        def as_dict(self) -> dict:
            return {"key": self.key, "inputs": _v1_inputs(self.inputs)}

    class Input(DynamicInput):
        def __init__(self, id: str, options: list, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, extra_dict: Optional[dict] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)

        def get_all(self) -> list:
            return [self] + [item for option in self.options for item in option.inputs]

        def as_dict(self) -> dict:
            return {**super().as_dict(), "options": [option.as_dict() for option in self.options]}

        def validate(self) -> None:
            for option in self.options:
                for item in option.inputs:
                    item.validate()


@comfytype(io_type="COMFY_DYNAMICSLOT_V3")
class DynamicSlot(ComfyTypeI):
    """An optional socket that, once linked, brings further inputs."""
    Type = dict

    class Input(DynamicInput):
        def __init__(self, slot: Input, inputs: list, display_name: Optional[str] = None,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, extra_dict: Optional[dict] = None):
            if isinstance(slot, DynamicInput):
                raise ValueError("DynamicSlot: the slot cannot itself be a dynamic input")
            self.slot = copy.copy(slot)
            self.slot.display_name = slot.display_name if slot.display_name is not None else display_name
            self.slot.tooltip = slot.tooltip if slot.tooltip is not None else tooltip
            self.slot.lazy = slot.lazy if slot.lazy is not None else lazy
            self.force_input = None
            if isinstance(self.slot, WidgetInput):
                self.force_input = self.slot.force_input = True
            super().__init__(slot.id, self.slot.display_name, True, self.slot.tooltip, self.slot.lazy,
                             slot.extra_dict if slot.extra_dict else extra_dict)
            self.inputs = list(inputs)

        def get_all(self) -> list:
            return [self.slot] + self.inputs

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({"slotType": str(self.slot.get_io_type()),
                                                     "inputs": _v1_inputs(self.inputs),
                                                     "forceInput": self.force_input})}


