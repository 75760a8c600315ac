"""`comfy_api.latest.io`: ComfyUI's V3 node schema, as packs write it.

A V3 node is a class with classmethods: `define_schema()` returns a `Schema` (node id, category, a list of
`io.X.Input(...)` and `io.X.Output(...)`, flags), `execute(**inputs)` returns a `NodeOutput`. Each socket kind is a
class (`io.Image`, `io.Int`, `io.Custom("MY_TYPE")`) whose nested `Input` / `Output` classes describe one socket;
`io.Int.Input("steps", default=20, min=1)` is the V3 spelling of `("INT", {"default": 20, "min": 1})`.

This module holds the declarations only: each input knows its V1 form (`v1_entry()`), and a Schema turns into the
V1 `INPUT_TYPES` / `RETURN_TYPES` view ComfyUI gives V3 classes. How a V3 class runs in our engine (dynamic
inputs expanded per node, hidden values, NodeOutput) is compat/v3_adapter.py.
"""
from __future__ import annotations

import copy
import enum
import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional


def _pruned(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class FolderType(str, enum.Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, enum.Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, enum.Enum):
    number = "number"
    slider = "slider"
    gradient_slider = "gradientslider"


class ControlAfterGenerate(str, enum.Enum):
    fixed = "fixed"
    increment = "increment"
    decrement = "decrement"
    randomize = "randomize"


class RemoteOptions:
    """A combo whose choices the editor fetches from a route of the server."""

    def __init__(self, route: str, refresh_button: bool, control_after_refresh: str = "first",
                 timeout: Optional[int] = None, max_retries: Optional[int] = None, refresh: Optional[int] = None):
        self.route, self.refresh_button, self.control_after_refresh = route, refresh_button, control_after_refresh
        self.timeout, self.max_retries, self.refresh = timeout, max_retries, refresh

    def as_dict(self) -> dict:
        return _pruned({"route": self.route, "refresh_button": self.refresh_button,
                        "control_after_refresh": self.control_after_refresh, "timeout": self.timeout,
                        "max_retries": self.max_retries, "refresh": self.refresh})


# -- sockets ----------------------------------------------------------------------------------------------------------
class _ComfyType:
    """A socket kind. `io_type` is its wire name; `Input` / `Output` describe one socket of the kind."""
    Type: Any = Any
    io_type: Optional[str] = None


class _IO_V3:
    Parent: Any = None  # the socket kind this Input/Output class belongs to (set by @comfytype)

    def validate(self) -> None:
        pass

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    @property
    def Type(self) -> Any:  # noqa: N802 - ComfyUI's name
        return self.Parent.Type


class Input(_IO_V3):
    """One input socket. `optional` puts it in the V1 "optional" section; the rest become its V1 options."""

    def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, lazy: Optional[bool] = None, extra_dict: Optional[dict] = None,
                 raw_link: Optional[bool] = None, advanced: Optional[bool] = None):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.rawLink = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict:
        own = _pruned({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy, "rawLink": self.rawLink, "advanced": self.advanced})
        return {**own, **_pruned(self.extra_dict)}

    def get_io_type(self) -> str:
        return self.io_type

    def get_all(self) -> List["Input"]:
        """This input and the inputs nested in it (dynamic inputs)."""
        return [self]

    def v1_entry(self) -> tuple:
        """(section, (type, options)) as INPUT_TYPES shows it."""
        options = self.as_dict()
        options.pop("optional", None)
        return ("optional" if self.optional else "required"), (self.get_io_type(), options)


class WidgetInput(Input):
    """An input that has a widget in the editor (a value typed in) unless `force_input`."""

    def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                 tooltip: Optional[str] = None, lazy: Optional[bool] = None, default: Any = None,
                 socketless: Optional[bool] = None, widget_type: Optional[str] = None,
                 force_input: Optional[bool] = None, extra_dict: Optional[dict] = None,
                 raw_link: Optional[bool] = None, advanced: Optional[bool] = None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict:
        return {**super().as_dict(), **_pruned({"default": self.default, "socketless": self.socketless,
                                                 "widgetType": self.widget_type, "forceInput": self.force_input})}

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_IO_V3):
    def __init__(self, id: Optional[str] = None, display_name: Optional[str] = None,
                 tooltip: Optional[str] = None, is_output_list: bool = False):
        self.id = id
        self.display_name = display_name if display_name else id
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict:
        return _pruned({"display_name": self.display_name or self.id, "tooltip": self.tooltip,
                        "is_output_list": self.is_output_list})

    def get_io_type(self) -> str:
        return self.io_type


class ComfyTypeI(_ComfyType):
    """A socket kind with inputs only."""
    class Input(Input):
        pass


class ComfyTypeIO(ComfyTypeI):
    """A socket kind with inputs and outputs."""
    class Output(Output):
        pass


def comfytype(io_type: str, **_: Any):
    """Class decorator naming a socket kind. Its Input/Output classes are given their own subclasses, so each
    kind's sockets report that kind (`io.Image.Input(...).io_type == "IMAGE"`)."""
    def decorate(cls: type) -> type:
        if not issubclass(cls, _ComfyType):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {k: v for k, v in vars(cls).items()
                                                          if k not in ("__dict__", "__weakref__")})
        cls.io_type = io_type
        for part in ("Input", "Output"):
            base = getattr(cls, part, None)
            if isinstance(base, type):
                own = type(part, (base,), {"__qualname__": f"{cls.__name__}.{part}", "__module__": cls.__module__,
                                           "__doc__": base.__doc__})
                own.Parent = cls
                setattr(cls, part, own)
        return cls
    return decorate


def Custom(io_type: str) -> type:  # noqa: N802 - ComfyUI's name
    """A socket kind for a pack's own type name."""
    @comfytype(io_type=io_type)
    class CustomComfyType(ComfyTypeIO):
        pass
    return CustomComfyType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, default: Optional[bool] = None,
                     label_on: Optional[str] = None, label_off: Optional[str] = None,
                     socketless: Optional[bool] = None, force_input: Optional[bool] = None,
                     extra_dict: Optional[dict] = None, raw_link: Optional[bool] = None,
                     advanced: Optional[bool] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({"label_on": self.label_on, "label_off": self.label_off})}


def _display(mode: Any) -> Any:
    return mode.value if isinstance(mode, enum.Enum) else mode


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, default: Optional[int] = None,
                     min: Optional[int] = None, max: Optional[int] = None, step: Optional[int] = None,
                     control_after_generate: Any = None, display_mode: Any = None,
                     socketless: Optional[bool] = None, force_input: Optional[bool] = None,
                     extra_dict: Optional[dict] = None, raw_link: Optional[bool] = None,
                     advanced: Optional[bool] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": _display(self.control_after_generate),
                "display": _display(self.display_mode)})}


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, default: Optional[float] = None,
                     min: Optional[float] = None, max: Optional[float] = None, step: Optional[float] = None,
                     round: Optional[float] = None, display_mode: Any = None, gradient_stops: Optional[list] = None,
                     socketless: Optional[bool] = None, force_input: Optional[bool] = None,
                     extra_dict: Optional[dict] = None, raw_link: Optional[bool] = None,
                     advanced: Optional[bool] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode, self.gradient_stops = display_mode, gradient_stops

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({
                "min": self.min, "max": self.max, "step": self.step, "round": self.round,
                "display": _display(self.display_mode), "gradient_stops": self.gradient_stops})}


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, multiline: bool = False,
                     placeholder: Optional[str] = None, default: Optional[str] = None,
                     dynamic_prompts: Optional[bool] = None, socketless: Optional[bool] = None,
                     force_input: Optional[bool] = None, extra_dict: Optional[dict] = None,
                     raw_link: Optional[bool] = None, advanced: Optional[bool] = None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({"multiline": self.multiline, "placeholder": self.placeholder,
                                                     "dynamicPrompts": self.dynamic_prompts})}


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        """A pick-one list; `options` may be an Enum class (its values are the choices)."""

        def __init__(self, id: str, options: Any = None, display_name: Optional[str] = None,
                     optional: bool = False, tooltip: Optional[str] = None, lazy: Optional[bool] = None,
                     default: Any = None, control_after_generate: Any = None, upload: Optional[UploadType] = None,
                     image_folder: Optional[FolderType] = None, remote: Optional[RemoteOptions] = None,
                     socketless: Optional[bool] = None, extra_dict: Optional[dict] = None,
                     raw_link: Optional[bool] = None, advanced: Optional[bool] = None, **_: Any):
            if isinstance(options, type) and issubclass(options, enum.Enum):
                options = [member.value for member in options]
            if isinstance(default, enum.Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, None,
                             extra_dict, raw_link, advanced)
            self.multiselect = False
            self.options = list(options) if options is not None else None
            self.control_after_generate, self.upload = control_after_generate, upload
            self.image_folder, self.remote = image_folder, remote

        def as_dict(self) -> dict:
            own = _pruned({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": _display(self.control_after_generate),
                "image_folder": _display(self.image_folder),
                "remote": self.remote.as_dict() if self.remote else None})
            if self.upload is not None:
                own[_display(self.upload)] = True
            return {**super().as_dict(), **own}

    class Output(Output):
        def __init__(self, id: Optional[str] = None, display_name: Optional[str] = None,
                     options: Optional[list] = None, tooltip: Optional[str] = None, is_output_list: bool = False):
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []


@comfytype(io_type="COMBO")
class MultiCombo(ComfyTypeI):
    """A pick-several list: the value is a list of choices."""
    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: list, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, lazy: Optional[bool] = None, default: Optional[list] = None,
                     placeholder: Optional[str] = None, chip: Optional[bool] = None,
                     control_after_generate: Any = None, socketless: Optional[bool] = None,
                     extra_dict: Optional[dict] = None, raw_link: Optional[bool] = None,
                     advanced: Optional[bool] = None):
            super().__init__(id, options, display_name, optional, tooltip, lazy, default, control_after_generate,
                             socketless=socketless, extra_dict=extra_dict, raw_link=raw_link, advanced=advanced)
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def as_dict(self) -> dict:
            return {**super().as_dict(),
                    "multi_select": _pruned({"placeholder": self.placeholder, "chip": self.chip})}


def _socket(io_type: str, name: str) -> type:
    """A plain socket kind (no widget): IMAGE, MODEL, ..."""
    return comfytype(io_type=io_type)(type(name, (ComfyTypeIO,), {"__module__": __name__}))


Image = _socket("IMAGE", "Image")
Mask = _socket("MASK", "Mask")
Latent = _socket("LATENT", "Latent")
Conditioning = _socket("CONDITIONING", "Conditioning")
Sampler = _socket("SAMPLER", "Sampler")
Sigmas = _socket("SIGMAS", "Sigmas")
Noise = _socket("NOISE", "Noise")
Guider = _socket("GUIDER", "Guider")
Clip = _socket("CLIP", "Clip")
ControlNet = _socket("CONTROL_NET", "ControlNet")
Vae = _socket("VAE", "Vae")
Model = _socket("MODEL", "Model")
ModelPatch = _socket("MODEL_PATCH", "ModelPatch")
MODEL_PATCH = ModelPatch
ClipVision = _socket("CLIP_VISION", "ClipVision")
ClipVisionOutput = _socket("CLIP_VISION_OUTPUT", "ClipVisionOutput")
StyleModel = _socket("STYLE_MODEL", "StyleModel")
Gligen = _socket("GLIGEN", "Gligen")
UpscaleModel = _socket("UPSCALE_MODEL", "UpscaleModel")
LatentUpscaleModel = _socket("LATENT_UPSCALE_MODEL", "LatentUpscaleModel")
Audio = _socket("AUDIO", "Audio")
Video = _socket("VIDEO", "Video")
SVG = _socket("SVG", "SVG")
LoraModel = _socket("LORA_MODEL", "LoraModel")
LossMap = _socket("LOSS_MAP", "LossMap")
Voxel = _socket("VOXEL", "Voxel")
Mesh = _socket("MESH", "Mesh")
Hooks = _socket("HOOKS", "Hooks")
HookKeyframes = _socket("HOOK_KEYFRAMES", "HookKeyframes")
TimestepsRange = _socket("TIMESTEPS_RANGE", "TimestepsRange")
LatentOperation = _socket("LATENT_OPERATION", "LatentOperation")
FlowControl = _socket("FLOW_CONTROL", "FlowControl")
Accumulation = _socket("ACCUMULATION", "Accumulation")
Load3DCamera = _socket("LOAD3D_CAMERA", "Load3DCamera")
Load3D = _socket("LOAD_3D", "Load3D")
Load3DAnimation = _socket("LOAD_3D_ANIMATION", "Load3DAnimation")
Photomaker = _socket("PHOTOMAKER", "Photomaker")
Point = _socket("POINT", "Point")
FaceAnalysis = _socket("FACE_ANALYSIS", "FaceAnalysis")
BBOX = _socket("BBOX", "BBOX")
SEGS = _socket("SEGS", "SEGS")
AnyType = _socket("*", "AnyType")
AudioEncoder = _socket("AUDIO_ENCODER", "AudioEncoder")
AudioEncoderOutput = _socket("AUDIO_ENCODER_OUTPUT", "AudioEncoderOutput")
Tracks = _socket("TRACKS", "Tracks")
Dict = _socket("DICT", "Dict")
Array = _socket("ARRAY", "Array")
WanCameraEmbedding = _socket("WAN_CAMERA_EMBEDDING", "WanCameraEmbedding")
Histogram = _socket("HISTOGRAM", "Histogram")


@comfytype(io_type="WEBCAM")
class Webcam(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        pass


@comfytype(io_type="COLOR")
class Color(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, socketless: bool = True, advanced: Optional[bool] = None,
                     default: str = "#ffffff"):
            super().__init__(id, display_name, optional, tooltip, None, default, socketless, advanced=advanced)


@comfytype(io_type="BOUNDING_BOX")
class BoundingBox(ComfyTypeIO):
    """A rectangle `{"x", "y", "width", "height"}`; as an input, a widget unless `force_input`."""
    Type = dict

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: Optional[str] = None, optional: bool = False,
                     tooltip: Optional[str] = None, socketless: bool = True, default: Optional[dict] = None,
                     component: Optional[str] = None, force_input: Optional[bool] = None):
            default = default if default is not None else {"x": 0, "y": 0, "width": 512, "height": 512}
            super().__init__(id, display_name, optional, tooltip, None, default, socketless,
                             force_input=force_input)
            self.component = component

        def as_dict(self) -> dict:
            return {**super().as_dict(), **_pruned({"component": self.component})}


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
