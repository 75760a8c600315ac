"""`comfy.controlnet`: ComfyUI's control classes as packs use them -- `isinstance(cond["control"], ControlNet)`,
`control_net.copy().set_cond_hint(hint, strength, (start, end), vae)`, `load_controlnet(path)`.

The objects are the engine's own: CONTROL_NET values are control models (diffusion/controlnet: ControlNetControl,
T2IAdapterControl, ControlLoraControl) and what conditioning carries is a ControlRuntime; both have ComfyUI's
`copy` / `set_cond_hint` / `set_previous_controlnet`. The classes here answer isinstance for either form by kind,
and can be subclassed by packs like any class.
"""
from __future__ import annotations

import enum
from typing import Any, Optional

from diffusion.controlnet.control import ControlModelBase, ControlRuntime
from diffusion.controlnet.control_lora import ControlLoraControl
from diffusion.controlnet.model import ControlNetControl
from diffusion.controlnet.t2i_adapter import T2IAdapterControl


class StrengthType(enum.Enum):
    CONSTANT = 1
    LINEAR_UP = 2


def _model_of(obj: Any) -> Any:
    return obj.control_model if isinstance(obj, ControlRuntime) else obj


class _ByKind(type):
    """isinstance(x, cls): x is an instance of cls itself (a pack's subclass), or an engine control object of
    the kind cls names (`_kinds`)."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        kinds = cls.__dict__.get("_kinds")
        return bool(kinds) and isinstance(_model_of(obj), kinds)


class ControlBase(metaclass=_ByKind):
    _kinds = (ControlModelBase,)


class ControlNet(ControlBase):
    _kinds = (ControlNetControl,)


class ControlLora(ControlNet):
    _kinds = (ControlLoraControl,)


class T2IAdapter(ControlBase):
    _kinds = (T2IAdapterControl,)


class ControlNetSD35(ControlNet):
    _kinds = ()  # SD3.5 ControlNets are not supported yet


def load_controlnet(ckpt_path: str, model: Any = None, model_options: Optional[dict] = None) -> Any:
    """A CONTROL_NET from a file (ControlNet, T2I-adapter or control-LoRA; `model` for diff ControlNets)."""
    from model_management.control_files import load_control_model  # noqa: PLC0415
    return load_control_model(str(ckpt_path), model=model)


def load_t2i_adapter(t2i_data: dict, model_options: Optional[dict] = None) -> Any:
    from model_management.control_files import control_model_from_state_dict  # noqa: PLC0415
    return control_model_from_state_dict(t2i_data, source="t2i_adapter")
