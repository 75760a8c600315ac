"""`comfy.comfy_types.node_typing`: the typing helpers packs annotate V1 nodes with.

`IO` names the common socket types. Its members are plain strings (`IO.INT` is exactly `"INT"`), except `IO.ANY`,
which compares equal to every type (a str whose `!=` is always False, the idiom the engine's type checks honour).
Plain strings matter: the engine treats an input as a widget only when its type is exactly a str such as "INT",
so an enum member there would turn widgets into sockets. Iteration, `IO("INT")` and `IO["INT"]` still work.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Literal, Optional, TypedDict

try:
    from typing import NotRequired
except ImportError:  # Python 3.10
    from typing_extensions import NotRequired  # type: ignore[assignment]


class AnyType(str):
    """A type name that matches every other type: `AnyType("*") != "IMAGE"` is False. Only `!=` is overridden
    (as in packs' own idiom): type checks ask `!=`, while `==` stays plain so literal handling is unaffected."""

    def __ne__(self, other: object) -> bool:
        return False


class _IOMeta(type):
    def _members(cls) -> dict:
        return {k: v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)}

    def __iter__(cls):
        return iter(cls._members().values())

    def __len__(cls) -> int:
        return len(cls._members())

    def __contains__(cls, value: object) -> bool:
        return any(str.__eq__(m, value) is True for m in cls._members().values()) if isinstance(value, str) else False

    def __getitem__(cls, name: str) -> str:
        return cls._members()[name]

    def __call__(cls, value: str) -> str:
        for member in cls._members().values():
            if str.__eq__(member, value) is True:
                return member
        raise ValueError(f"{value!r} is not a valid IO type")


class IO(metaclass=_IOMeta):
    """The socket type names packs annotate with (values as the wire format spells them)."""
    AUDIO = "AUDIO"
    BBOX = "BBOX"
    BOOLEAN = "BOOLEAN"
    CLIP = "CLIP"
    CLIP_VISION = "CLIP_VISION"
    CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
    COMBO = "COMBO"
    CONDITIONING = "CONDITIONING"
    CONTROL_NET = "CONTROL_NET"
    FACE_ANALYSIS = "FACE_ANALYSIS"
    FLOAT = "FLOAT"
    GLIGEN = "GLIGEN"
    GUIDER = "GUIDER"
    IMAGE = "IMAGE"
    INT = "INT"
    LATENT = "LATENT"
    LORA_MODEL = "LORA_MODEL"
    LOSS_MAP = "LOSS_MAP"
    MASK = "MASK"
    MODEL = "MODEL"
    NOISE = "NOISE"
    POINT = "POINT"
    SAMPLER = "SAMPLER"
    SEGS = "SEGS"
    SIGMAS = "SIGMAS"
    STRING = "STRING"
    STYLE_MODEL = "STYLE_MODEL"
    UPSCALE_MODEL = "UPSCALE_MODEL"
    VAE = "VAE"
    VIDEO = "VIDEO"
    WEBCAM = "WEBCAM"
    ANY = AnyType("*")
    NUMBER = "FLOAT,INT"
    PRIMITIVE = "STRING,FLOAT,INT,BOOLEAN"


class RemoteInputOptions(TypedDict):
    route: str
    refresh_button: NotRequired[bool]
    control_after_refresh: NotRequired[Literal["first", "last"]]
    timeout: NotRequired[int]
    max_retries: NotRequired[int]
    refresh: NotRequired[int]


class InputTypeOptions(TypedDict, total=False):
    """The options dict of one input (the second element of `(TYPE, options)`)."""
    default: Any
    defaultInput: bool
    forceInput: bool
    lazy: bool
    rawLink: bool
    tooltip: str
    hidden: bool
    advanced: bool
    min: float
    max: float
    step: float
    round: Any
    display: str
    control_after_generate: bool
    label_on: str
    label_off: str
    multiline: bool
    placeholder: str
    dynamicPrompts: bool
    image_upload: bool
    image_folder: str
    remote: RemoteInputOptions
    multiselect: bool


class HiddenInputTypeDict(TypedDict, total=False):
    node_id: Literal["UNIQUE_ID"]
    unique_id: Literal["UNIQUE_ID"]
    prompt: Literal["PROMPT"]
    extra_pnginfo: Literal["EXTRA_PNGINFO"]
    dynprompt: Literal["DYNPROMPT"]


class InputTypeDict(TypedDict, total=False):
    """What INPUT_TYPES returns."""
    required: dict
    optional: dict
    hidden: HiddenInputTypeDict


class FileLocator(TypedDict):
    """Where an output file is: what `ui.images` entries and /view take."""
    filename: str
    subfolder: str
    type: Literal["input", "output", "temp"]


class ComfyNodeABC(ABC):
    """Base for V1 node classes, for type checkers: the attributes are declared, not defined."""
    DESCRIPTION: str
    CATEGORY: str
    EXPERIMENTAL: bool
    DEPRECATED: bool
    RETURN_TYPES: tuple
    RETURN_NAMES: tuple
    OUTPUT_TOOLTIPS: tuple
    FUNCTION: str
    OUTPUT_NODE: bool
    INPUT_IS_LIST: bool
    OUTPUT_IS_LIST: tuple

    @classmethod
    @abstractmethod
    def INPUT_TYPES(cls) -> InputTypeDict:  # noqa: N802 - the V1 name
        """The node's inputs: {"required": {...}, "optional": {...}, "hidden": {...}}."""


def _lazy_names(cls: type) -> Optional[set]:
    try:
        declared = cls.INPUT_TYPES()
    except Exception:
        return None
    names = set()
    for section in ("required", "optional"):
        for name, raw in (declared.get(section) or {}).items():
            if isinstance(raw, (list, tuple)) and len(raw) > 1 and isinstance(raw[1], dict) and raw[1].get("lazy"):
                names.add(name)
    return names


class CheckLazyMixin:
    """Default `check_lazy_status`: ask for every lazy input that has not been evaluated yet (is None)."""

    def check_lazy_status(self, **kwargs: Any) -> list:
        lazy = _lazy_names(type(self))
        return [name for name, value in kwargs.items() if value is None and (lazy is None or name in lazy)]


UnetApplyFunction = Callable[..., Any]
UnetWrapperFunction = Callable[[UnetApplyFunction, dict], Any]
UnetParams = dict
