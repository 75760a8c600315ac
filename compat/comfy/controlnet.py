"""`comfy.controlnet`: ComfyUI's control classes, with its behaviour, over Tessera's control networks.

What `load_controlnet` returns is a `ControlNet` / `ControlLora` / `T2IAdapter` speaking ComfyUI's protocol
(diffusion/controlnet/control_protocol.py): `copy()`, `set_cond_hint(hint, strength, (start, end), vae)`,
`set_previous_controlnet`, `pre_run(model, percent_to_sigma)`, `get_control(x_noisy, sigma, cond, batched_number,
transformer_options)`, `control_merge`, `cleanup()`, `get_models()`, and the attributes packs read and set
(`cond_hint_original`, `strength`, `timestep_percent_range`, `timestep_range`, `compression_ratio`,
`upscale_algorithm`, `extra_conds`, `strength_type`, `control_model`, `control_model_wrapped`, ...). Packs subclass
them (ComfyUI-Advanced-ControlNet's ControlNetAdvanced overrides get_control and calls
`self.control_model(x=, hint=, timesteps=, context=, y=)`), and the sampler calls them like ComfyUI does.

`control_model` is an `EngineControlNet`: ComfyUI's ControlNet call form over the engine's network, which runs
where the model manager keeps it. The classes also answer isinstance for the engine's own control objects by kind
(a CONTROL_NET from Tessera's loader nodes is a ControlNet here too).
"""
from __future__ import annotations

import enum
import logging
import math
from typing import Any, Optional

import torch

from diffusion.controlnet.control import ControlModelBase, ControlRuntime
from diffusion.controlnet.control_lora import ControlLoraControl
from diffusion.controlnet.control_protocol import to_comfy
from diffusion.controlnet.model import ControlNetControl
from diffusion.controlnet.t2i_adapter import T2IAdapterControl
from diffusion.image_ops import common_upscale, repeat_to_batch_size

log = logging.getLogger("tessera.compat")


class StrengthType(enum.Enum):
    CONSTANT = 1
    LINEAR_UP = 2


def broadcast_image_to(tensor: torch.Tensor, target_batch_size: int, batched_number: int) -> torch.Tensor:
    """A hint batch fitted to a UNet batch of `batched_number` conditionings: a single image stays one (it
    broadcasts); otherwise the first batch/batched_number images, cycled to that count, repeated per chunk."""
    if tensor.shape[0] == 1:
        return tensor
    per_chunk = target_batch_size // batched_number
    tensor = tensor[:per_chunk]
    if per_chunk > tensor.shape[0]:
        tensor = repeat_to_batch_size(tensor, per_chunk)
    if tensor.shape[0] == target_batch_size:
        return tensor
    return torch.cat([tensor] * batched_number, dim=0)


def _model_of(obj: Any) -> Any:
    return obj.control_model if isinstance(obj, ControlRuntime) else obj


class _ByKind(type):
    """isinstance(x, cls): x is an instance of cls itself (or a pack's subclass), or an engine control object of
    the kind cls names (`_kinds`)."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        kinds = cls.__dict__.get("_kinds")
        return bool(kinds) and isinstance(_model_of(obj), kinds)


class ControlBase(metaclass=_ByKind):
    """The state every ComfyUI control carries, and the behaviour shared by all kinds."""
    _kinds = (ControlModelBase,)

    def __init__(self) -> None:
        self.cond_hint_original: Optional[torch.Tensor] = None
        self.cond_hint: Optional[torch.Tensor] = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.latent_format = None
        self.vae = None
        self.global_average_pooling = False
        self.timestep_range: Optional[tuple] = None
        self.compression_ratio = 8
        self.upscale_algorithm = "nearest-exact"
        self.extra_args: dict = {}
        self.previous_controlnet: Any = None
        self.extra_conds: list = []
        self.strength_type = StrengthType.CONSTANT
        self.concat_mask = False
        self.extra_concat_orig: list = []
        self.extra_concat = None
        self.extra_hooks = None
        self.preprocess_image = lambda a: a

    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0, timestep_percent_range: tuple = (0.0, 1.0),
                      vae: Any = None, extra_concat: Optional[list] = None) -> "ControlBase":
        """The control image [B, C, H, W] in 0..1, its strength and its window (percent of the run)."""
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        if self.latent_format is not None:
            if vae is None:
                log.warning("this control model takes latent hints but no VAE was given to the apply node")
            self.vae = vae
        self.extra_concat_orig = list(extra_concat or [])
        if self.concat_mask and not self.extra_concat_orig:
            self.extra_concat_orig.append(torch.tensor([[[[1.0]]]]))
        return self

    def pre_run(self, model: Any, percent_to_timestep_function: Any) -> None:
        """Before a sampler run: the window in sigmas (start, end), and the same for the controls below."""
        self.timestep_range = (percent_to_timestep_function(self.timestep_percent_range[0]),
                               percent_to_timestep_function(self.timestep_percent_range[1]))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet: Any) -> "ControlBase":
        self.previous_controlnet = controlnet
        return self

    def cleanup(self) -> None:
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.extra_concat = None
        self.timestep_range = None

    def get_models(self) -> list:
        return list(self.previous_controlnet.get_models()) if self.previous_controlnet is not None else []

    def get_extra_hooks(self) -> list:
        out = [self.extra_hooks] if self.extra_hooks is not None else []
        below = getattr(self.previous_controlnet, "get_extra_hooks", None)
        return out + (list(below()) if callable(below) else [])

    def copy_to(self, c: "ControlBase") -> None:
        c.cond_hint_original = self.cond_hint_original
        c.strength = self.strength
        c.timestep_percent_range = self.timestep_percent_range
        c.global_average_pooling = self.global_average_pooling
        c.compression_ratio = self.compression_ratio
        c.upscale_algorithm = self.upscale_algorithm
        c.latent_format = self.latent_format
        c.extra_args = dict(self.extra_args)
        c.vae = self.vae
        c.extra_conds = list(self.extra_conds)
        c.strength_type = self.strength_type
        c.concat_mask = self.concat_mask
        c.extra_concat_orig = list(self.extra_concat_orig)
        c.extra_hooks = self.extra_hooks.clone() if self.extra_hooks else None
        c.preprocess_image = self.preprocess_image

    def inference_memory_requirements(self, dtype: Any) -> int:
        if self.previous_controlnet is not None:
            return self.previous_controlnet.inference_memory_requirements(dtype)
        return 0

    def control_merge(self, control: dict, control_prev: Optional[dict], output_dtype: Any) -> dict:
        """This control's outputs (average-pooled when asked, scaled by strength, cast to output_dtype) summed
        entry by entry with the result of the controls below."""
        out: dict = {"input": [], "middle": [], "output": []}
        for key, outputs in control.items():
            scaled: set = set()  # a tensor listed twice is scaled once
            for i, x in enumerate(outputs):
                if x is not None:
                    if self.global_average_pooling:
                        x = torch.mean(x, dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    if x not in scaled:
                        scaled.add(x)
                        if self.strength_type == StrengthType.CONSTANT:
                            x *= self.strength
                        elif self.strength_type == StrengthType.LINEAR_UP:
                            x *= self.strength ** float(len(outputs) - i)
                    if output_dtype is not None and x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out.setdefault(key, []).append(x)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                mine = out[key]
                for i, prev in enumerate(control_prev.get(key) or []):
                    if i >= len(mine):
                        mine.append(prev)
                    elif prev is not None:
                        mine[i] = prev if mine[i] is None else prev + mine[i]
        return out

    def set_extra_arg(self, argument: str, value: Any = None) -> None:
        self.extra_args[argument] = value

    def _below_and_active(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict, batched_number: int,
                          transformer_options: dict) -> tuple:
        """(the controls below's result, whether this one is inside its window at sigma t[0])."""
        control_prev = None
        if self.previous_controlnet is not None:
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        active = self.timestep_range is None or not (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1])
        return control_prev, active


class EngineControlNet(torch.nn.Module):
    """A ControlNet's `control_model`: `forward(x, hint, timesteps, context, y=None)` -> {"middle", "output"} as
    ComfyUI's cldm ControlNet answers, run by the engine's network (placed by the model manager)."""

    def __init__(self, engine: ControlNetControl) -> None:
        super().__init__()
        self.engine = engine

    @property
    def dtype(self) -> torch.dtype:
        return self.engine.run_dtype

    @property
    def network(self) -> torch.nn.Module:
        return self.engine.network

    def forward(self, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: Any,
                y: Optional[torch.Tensor] = None, **kwargs: Any) -> dict:
        if kwargs:
            raise ValueError(f"this ControlNet takes no extra inputs {sorted(kwargs)} (only y)")
        return self.engine.forward_network(x, hint, timesteps, context, y)


def _cast(tensor: Optional[torch.Tensor], device: Any, dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.to(device=device, dtype=dtype)


class ControlNet(ControlBase):
    """A ControlNet with ComfyUI's behaviour: the hint resized to the latent's size x compression_ratio (centre
    crop), x and the timestep as the UNet sees them (c_in, the model's timestep), residuals merged by strength."""
    _kinds = (ControlNetControl,)

    def __init__(self, control_model: Any = None, global_average_pooling: bool = False, compression_ratio: int = 8,
                 latent_format: Any = None, load_device: Any = None, manual_cast_dtype: Any = None,
                 extra_conds: Optional[list] = None, strength_type: StrengthType = StrengthType.CONSTANT,
                 concat_mask: bool = False, preprocess_image: Any = lambda a: a) -> None:
        super().__init__()
        from comfy.model_management import unet_offload_device  # noqa: PLC0415
        from comfy.model_patcher import ModelPatcher  # noqa: PLC0415
        self.control_model = control_model
        self.load_device = load_device
        if control_model is not None:
            self.control_model_wrapped = ModelPatcher(control_model, load_device=load_device,
                                                      offload_device=unet_offload_device())
        self.compression_ratio = compression_ratio
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current = None
        self.manual_cast_dtype = manual_cast_dtype
        self.latent_format = latent_format
        self.extra_conds += ["y"] if extra_conds is None else list(extra_conds)
        self.strength_type = strength_type
        self.concat_mask = concat_mask
        self.preprocess_image = preprocess_image

    def _prepare_hint(self, x_noisy: torch.Tensor, dtype: torch.dtype) -> None:
        """cond_hint for this latent size (kept until the size changes): resized, VAE-encoded for latent-hint
        models, extra channels concatenated."""
        ratio = self.compression_ratio
        if self.vae is not None:
            ratio *= self.vae.spacial_compression_encode()
        elif self.latent_format is not None:
            raise ValueError("this ControlNet needs a VAE: connect one to the apply node's vae input")
        hint = common_upscale(self.cond_hint_original, x_noisy.shape[-1] * ratio, x_noisy.shape[-2] * ratio,
                              self.upscale_algorithm, "center")
        hint = self.preprocess_image(hint)
        if self.vae is not None:
            hint = self.vae.encode(hint.movedim(1, -1))
        if self.latent_format is not None:
            hint = self.latent_format.process_in(hint)
        if self.extra_concat_orig:
            extra = []
            for c in self.extra_concat_orig:
                c = common_upscale(c.to(hint.device), hint.shape[-1], hint.shape[-2], self.upscale_algorithm, "center")
                extra.append(repeat_to_batch_size(c, hint.shape[0]))
            hint = torch.cat([hint] + extra, dim=1)
        self.cond_hint = hint.to(device=x_noisy.device, dtype=dtype)

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict, batched_number: int,
                    transformer_options: dict) -> Optional[dict]:
        control_prev, active = self._below_and_active(x_noisy, t, cond, batched_number, transformer_options)
        if not active:
            return control_prev
        if self.model_sampling_current is None:
            raise ValueError("a ControlNet was asked for its residuals outside a sampler run (pre_run not called)")
        dtype = self.manual_cast_dtype if self.manual_cast_dtype is not None else self.control_model.dtype
        ratio = self.compression_ratio
        if self.cond_hint is None or x_noisy.shape[2] * ratio != self.cond_hint.shape[2] or \
                x_noisy.shape[3] * ratio != self.cond_hint.shape[3]:
            self._prepare_hint(x_noisy, dtype)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        extra = dict(self.extra_args)
        for name in self.extra_conds:
            value = cond.get(name)
            if value is not None:
                extra[name] = _cast(value, x_noisy.device, dtype) if value.dtype.is_floating_point else value
        sampling = self.model_sampling_current
        timestep = sampling.timestep(t)
        x_in = sampling.calculate_input(t, x_noisy)
        control = self.control_model(x=x_in.to(dtype), hint=self.cond_hint, timesteps=timestep.to(dtype),
                                     context=_cast(context, x_noisy.device, dtype), **extra)
        return self.control_merge(control, control_prev, output_dtype=None)

    def copy(self) -> "ControlNet":
        c = ControlNet(None, global_average_pooling=self.global_average_pooling, load_device=self.load_device,
                       manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        return c

    def get_models(self) -> list:
        return super().get_models() + [self.control_model_wrapped]

    def pre_run(self, model: Any, percent_to_timestep_function: Any) -> None:
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self) -> None:
        self.model_sampling_current = None
        super().cleanup()


class ControlLora(ControlNet):
    """A control-LoRA: the ControlNet is built from the sampled MODEL's UNet at pre_run (the engine's
    ControlLoraControl builds and caches it) and released at cleanup."""
    _kinds = (ControlLoraControl,)

    def __init__(self, control_weights: ControlLoraControl, global_average_pooling: bool = False,
                 model_options: Optional[dict] = None) -> None:
        ControlBase.__init__(self)  # as ComfyUI's: no control model until pre_run builds it
        self.control_weights = control_weights
        self.global_average_pooling = global_average_pooling
        self.model_options = dict(model_options or {})
        self.extra_conds += ["y"]
        self.control_model = None
        self.control_model_wrapped = None
        self.load_device = None
        self.model_sampling_current = None
        self.manual_cast_dtype = None

    def pre_run(self, model: Any, percent_to_timestep_function: Any) -> None:
        super().pre_run(model, percent_to_timestep_function)
        self.control_model = EngineControlNet(self.control_weights.controlnet_for(model))

    def copy(self) -> "ControlLora":
        c = ControlLora(self.control_weights, global_average_pooling=self.global_average_pooling)
        self.copy_to(c)
        return c

    def cleanup(self) -> None:
        self.control_model = None
        super().cleanup()

    def get_models(self) -> list:
        return ControlBase.get_models(self)

    def inference_memory_requirements(self, dtype: Any) -> int:
        weights = self.control_weights.weights
        own = sum(v.numel() * v.element_size() for v in weights.values() if torch.is_tensor(v))
        return own + ControlBase.inference_memory_requirements(self, dtype)


class T2IAdapter(ControlBase):
    """A T2I-adapter: features computed once per hint size and merged into the UNet's input blocks (and the
    middle block for SDXL's), with ComfyUI's hint rule (resize to the latent's size x8, rounded up to the
    adapter's pixel-unshuffle factor)."""
    _kinds = (T2IAdapterControl,)

    def __init__(self, t2i_model: T2IAdapterControl, channels_in: int, compression_ratio: int = 8,
                 upscale_algorithm: str = "nearest-exact", device: Any = None) -> None:
        super().__init__()
        from comfy.model_management import get_torch_device  # noqa: PLC0415
        self.t2i_model = t2i_model
        self.channels_in = channels_in
        self.control_input: Optional[dict] = None
        self.compression_ratio = compression_ratio
        self.upscale_algorithm = upscale_algorithm
        self.device = device if device is not None else get_torch_device()
        self._run_model: Any = None

    def scale_image_to(self, width: int, height: int) -> tuple:
        unshuffle = self.t2i_model.net.unshuffle
        return math.ceil(width / unshuffle) * unshuffle, math.ceil(height / unshuffle) * unshuffle

    def pre_run(self, model: Any, percent_to_timestep_function: Any) -> None:
        super().pre_run(model, percent_to_timestep_function)
        self._run_model = model  # the adapter's features are placed by the UNet's layout

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict, batched_number: int,
                    transformer_options: dict) -> Optional[dict]:
        control_prev, active = self._below_and_active(x_noisy, t, cond, batched_number, transformer_options)
        if not active:
            return control_prev
        if self._run_model is None:
            raise ValueError("a T2I-adapter was asked for its residuals outside a sampler run (pre_run not called)")
        ratio = self.compression_ratio
        if self.cond_hint is None or x_noisy.shape[2] * ratio != self.cond_hint.shape[2] or \
                x_noisy.shape[3] * ratio != self.cond_hint.shape[3]:
            self.control_input = None
            width, height = self.scale_image_to(x_noisy.shape[3] * ratio, x_noisy.shape[2] * ratio)
            hint = common_upscale(self.cond_hint_original, width, height, self.upscale_algorithm, "center").float()
            if self.channels_in == 1 and hint.shape[1] > 1:
                hint = hint.mean(dim=1, keepdim=True)
            self.cond_hint = hint.to(x_noisy.device)
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
            self.control_input = None
        if self.control_input is None:
            ours = self.t2i_model.compute(x_noisy, t, None, None, self.cond_hint, self._run_model)
            self.control_input = to_comfy(ours)
        control = {k: [None if a is None else a.clone() for a in v] for k, v in self.control_input.items()}
        return self.control_merge(control, control_prev, x_noisy.dtype)

    def copy(self) -> "T2IAdapter":
        c = T2IAdapter(self.t2i_model, self.channels_in, self.compression_ratio, self.upscale_algorithm, self.device)
        self.copy_to(c)
        return c

    def cleanup(self) -> None:
        self._run_model = None
        self.control_input = None
        super().cleanup()


class ControlNetSD35(ControlNet):
    """SD3.5 ControlNets: Tessera loads none yet, so no CONTROL_NET is one (packs may still subclass it)."""
    _kinds = ()


def from_engine(control: Any) -> Any:
    """The ComfyUI-protocol object for an engine control model (anything else is returned as it is)."""
    from comfy.model_management import get_torch_device  # noqa: PLC0415
    if isinstance(control, ControlLoraControl):
        return ControlLora(control)
    if isinstance(control, ControlNetControl):
        return ControlNet(EngineControlNet(control), load_device=get_torch_device())
    if isinstance(control, T2IAdapterControl):
        return T2IAdapter(control, channels_in=control.net.image_channels)
    return control


def load_controlnet(ckpt_path: str, model: Any = None, model_options: Optional[dict] = None) -> Any:
    """A ControlNet, control-LoRA or T2I-adapter from a file (`model` for diff ControlNets), as ComfyUI's classes."""
    from model_management.control_files import load_control_model  # noqa: PLC0415
    return from_engine(load_control_model(str(ckpt_path), model=model))


def load_t2i_adapter(t2i_data: dict, model_options: Optional[dict] = None) -> Any:
    from model_management.control_files import control_model_from_state_dict  # noqa: PLC0415
    return from_engine(control_model_from_state_dict(t2i_data, source="t2i_adapter"))
