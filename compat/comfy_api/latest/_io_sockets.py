"""Socket kinds of the V3 schema (`comfy_api.latest.io`): the Input / Output base classes, `@comfytype`,
`Custom`, the widget kinds (Boolean, Int, Float, String, Combo, MultiCombo, Color, BoundingBox) and the plain
socket kinds (Image, Model, ...). Each input knows its V1 form (`v1_entry()`)."""
from __future__ import annotations

import enum
from typing import Any, List, Optional

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


