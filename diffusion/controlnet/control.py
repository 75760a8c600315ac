"""The control runtime: what ControlNet-apply nodes put into conditioning options under "control".

Guidance calls `residuals(x_in, t, entries, sigma, context=, y=, model=)` once per UNet batch. The runtime decides
whether its control model is active at this sigma (the start/end percent window), prepares the hint for the batch,
runs the control model, scales its residuals by the strength, and adds the residuals of the control that was on the
conditioning before it (`previous`), so stacked ControlNets sum. Outside its window only `previous` contributes.

Hint rule: the IMAGE is centre-cropped to the latent's aspect ratio, then resized with nearest-exact to 8x the
latent size (the pixel size the VAE would decode to) and repeated (cycled) over the UNet batch, so a batch of N
control images pairs with a latent batch of N, for the positive and negative halves alike. The resized hint is
cached per (batch, size, device, dtype), since it is the same at every step.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import torch

from diffusion.image_ops import common_upscale, repeat_to_batch_size

from .base import model_family
from .control_protocol import ControlCall, comfy_residuals, is_comfy_control, to_comfy

SIGMA_TOLERANCE = 1e-6


def _as_list(value: Any) -> List[Optional[torch.Tensor]]:
    if value is None:
        return []
    return [value] if torch.is_tensor(value) else list(value)


def scale_residuals(residuals: Dict[str, Any], strength: float) -> Dict[str, list]:
    """Every residual of a control dict multiplied by `strength` (None entries stay None)."""
    return {key: [None if r is None else r * strength for r in _as_list(value)] for key, value in residuals.items()}


def add_residuals(a: Optional[Dict[str, Any]], b: Optional[Dict[str, Any]]) -> Optional[Dict[str, list]]:
    """Element-wise sum of two control dicts (either may be None; a missing or None entry counts as zero)."""
    if a is None:
        return None if b is None else {k: _as_list(v) for k, v in b.items()}
    if b is None:
        return {k: _as_list(v) for k, v in a.items()}
    out: Dict[str, list] = {}
    for key in list(a) + [k for k in b if k not in a]:
        la, lb = _as_list(a.get(key)), _as_list(b.get(key))
        if la and lb and len(la) != len(lb):
            raise ValueError(f"stacked controls disagree on the number of {key!r} residuals ({len(la)} vs "
                             f"{len(lb)}): they were made for different models")
        if not la or not lb:
            out[key] = list(la or lb)
            continue
        out[key] = [x if y is None else y if x is None else x + y.to(x) for x, y in zip(la, lb)]
    return out


def image_to_hint(image: torch.Tensor) -> torch.Tensor:
    """IMAGE [B, H, W, C] (C = 1, 3 or 4) -> [B, 3, H, W] float in 0..1 (alpha dropped, gray repeated)."""
    if not torch.is_tensor(image) or image.ndim != 4:
        raise ValueError(f"image: expected an IMAGE [B, H, W, C], got "
                         f"{list(image.shape) if torch.is_tensor(image) else type(image).__name__}")
    channels = image.shape[-1]
    if channels == 1:
        image = image.expand(-1, -1, -1, 3)
    elif channels in (3, 4):
        image = image[..., :3]
    else:
        raise ValueError(f"image: expected 1, 3 or 4 channels, got {channels}")
    return image.movedim(-1, 1).float()


class ControlModelBase:
    """What every loaded control model shares: ComfyUI's way of applying one, which packs use directly --
    `control_net.copy().set_cond_hint(hint, strength, (start, end), vae).set_previous_controlnet(previous)` gives
    the ControlRuntime that conditioning carries under "control"."""

    def copy(self) -> "ControlRuntime":
        return ControlRuntime(self, None)


class ControlRuntime:
    """One applied control: a control model with its hint, strength, percent window and the control below it.

    It also has ComfyUI's ControlBase interface, for packs that apply controls themselves: `set_cond_hint`,
    `set_previous_controlnet`, `copy`, `cond_hint_original`, `timestep_percent_range`, `previous_controlnet`.
    `image` may be None until `set_cond_hint` gives the hint."""

    def __init__(self, control_model: Any, image: Optional[torch.Tensor], strength: float = 1.0,
                 start_percent: float = 0.0, end_percent: float = 1.0, vae: Any = None, previous: Any = None) -> None:
        if not 0.0 <= start_percent <= end_percent <= 1.0:
            raise ValueError(f"start_percent ({start_percent}) and end_percent ({end_percent}) must satisfy "
                             f"0 <= start_percent <= end_percent <= 1")
        self.control_model = control_model
        self.hint = image_to_hint(image) if image is not None else None
        self.strength = float(strength)
        self.start_percent = float(start_percent)
        self.end_percent = float(end_percent)
        self.vae = vae  # kept for control models that want latent hints
        self.previous = previous
        self._hint_cache: Optional[tuple] = None
        self._run_model: Any = None  # the MODEL of the sampler run in progress (pre_run .. cleanup)

    # -- ComfyUI's ControlBase interface ---------------------------------------------------------------------------
    def set_cond_hint(self, cond_hint: torch.Tensor, strength: float = 1.0,
                      timestep_percent_range: tuple = (0.0, 1.0), vae: Any = None,
                      extra_concat: Any = None) -> "ControlRuntime":
        """The hint as ComfyUI passes it: channels first, [B, C, H, W] in 0..1."""
        start, end = float(timestep_percent_range[0]), float(timestep_percent_range[1])
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"timestep_percent_range {timestep_percent_range}: need 0 <= start <= end <= 1")
        self.hint = image_to_hint(cond_hint.movedim(1, -1))
        self.strength, self.start_percent, self.end_percent, self.vae = float(strength), start, end, vae
        self._hint_cache = None
        return self

    def set_previous_controlnet(self, previous: Any) -> "ControlRuntime":
        self.previous = previous
        return self

    def copy(self) -> "ControlRuntime":
        twin = copy.copy(self)
        twin._hint_cache = None
        twin._run_model = None
        return twin

    def pre_run(self, model: Any, percent_to_timestep_function: Any = None) -> None:
        """A sampler run on `model` starts (ComfyUI's bracket, forwarded down the stack)."""
        self._run_model = model
        if self.previous is not None and callable(getattr(self.previous, "pre_run", None)):
            self.previous.pre_run(model, percent_to_timestep_function)

    def cleanup(self) -> None:
        self._run_model, self._hint_cache = None, None
        if self.previous is not None and callable(getattr(self.previous, "cleanup", None)):
            self.previous.cleanup()

    def get_models(self) -> list:
        below = getattr(self.previous, "get_models", None)
        return list(below()) if callable(below) else []

    def inference_memory_requirements(self, dtype: Any) -> int:
        below = getattr(self.previous, "inference_memory_requirements", None)
        return int(below(dtype)) if callable(below) else 0

    def get_control(self, x_noisy: torch.Tensor, t: torch.Tensor, cond: dict, batched_number: int,
                    transformer_options: dict) -> Optional[Dict[str, list]]:
        """ComfyUI's per-batch call, for a pack's control stacked above this one: this stack's residuals in
        ComfyUI's convention (control_protocol.py). Only inside a sampler run (after pre_run)."""
        model = self._run_model
        if model is None:
            raise ValueError("a ControlNet was asked for its residuals outside a sampler run (pre_run not called)")
        sampling = model.model_sampling
        call = ControlCall(x=x_noisy, sigma=t, x_in=sampling.calculate_input(t, x_noisy),
                           timestep=sampling.timestep(t).float(), context=cond.get("c_crossattn"), y=cond.get("y"),
                           concat=cond.get("c_concat"), batched_number=batched_number,
                           transformer_options=transformer_options, model=model,
                           num_input_blocks=model.unet.config.num_input_blocks)
        return to_comfy(self.residuals(call.x_in, call.timestep, None, t, context=call.context, y=call.y,
                                       model=model, call=call))

    @property
    def cond_hint_original(self) -> Optional[torch.Tensor]:
        return self.hint

    @cond_hint_original.setter
    def cond_hint_original(self, hint: torch.Tensor) -> None:
        self.hint, self._hint_cache = hint, None

    @property
    def timestep_percent_range(self) -> tuple:
        return (self.start_percent, self.end_percent)

    @property
    def previous_controlnet(self) -> Any:
        return self.previous

    def chain(self) -> List["ControlRuntime"]:
        """This control and every one stacked below it, top first."""
        out, node = [], self
        while node is not None:
            out.append(node)
            node = getattr(node, "previous", None)
        return out

    def sigma_range(self, model: Any) -> tuple:
        """(sigma_end, sigma_start): active while sigma_end <= sigma <= sigma_start."""
        sampling = model.model_sampling
        return sampling.percent_to_sigma(self.end_percent), sampling.percent_to_sigma(self.start_percent)

    def is_active(self, sigma: torch.Tensor, model: Any) -> bool:
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        low, high = self.sigma_range(model)
        return low - SIGMA_TOLERANCE <= s <= high + SIGMA_TOLERANCE

    def _check_family(self, model: Any) -> None:
        ours, theirs = getattr(self.control_model, "family", None), model_family(model)
        if ours is not None and theirs != "unknown" and ours != theirs:
            name = getattr(self.control_model, "name", None) or type(self.control_model).__name__
            raise ValueError(f"control_net: {name} is made for {ours} models but the MODEL is {theirs}; use a "
                             f"ControlNet of the model's family")

    def prepared_hint(self, x_in: torch.Tensor, dtype: Optional[torch.dtype] = None,
                      device: Optional[torch.device] = None, model: Any = None) -> torch.Tensor:
        """The hint for a UNet batch shaped like `x_in`: [B, 3, 8h, 8w] (cached). A control model that takes
        its hint as a latent (`hint_in_latent`: SD3.5's) gets the image preprocessed its way, encoded with the
        apply node's VAE and put in the MODEL's latent space: [B, C, h, w]."""
        batch, h, w = x_in.shape[0], x_in.shape[2], x_in.shape[3]
        device, dtype = device or x_in.device, dtype or x_in.dtype
        key = (batch, h, w, str(device), dtype)
        if self._hint_cache is None or self._hint_cache[0] != key:
            hint = common_upscale(self.hint, w * 8, h * 8, "nearest-exact", "center")
            if getattr(self.control_model, "hint_in_latent", False):
                hint = self._latent_hint(hint, model)
            hint = repeat_to_batch_size(hint, batch).to(device=device, dtype=dtype)
            self._hint_cache = (key, hint)
        return self._hint_cache[1]

    def _latent_hint(self, image: torch.Tensor, model: Any) -> torch.Tensor:
        if self.vae is None:
            raise ValueError("control_net: this ControlNet needs a VAE but none was provided: connect the vae input "
                             "of the Apply ControlNet node")
        image = self.control_model.preprocess_hint(image)
        latent = self.vae.encode(image.movedim(1, -1))
        return model.latent_format.process_in(latent.float())

    def residuals(self, x_in: torch.Tensor, t: torch.Tensor, entries: Any, sigma: torch.Tensor, *,
                  context: Optional[torch.Tensor] = None, y: Optional[torch.Tensor] = None,
                  model: Any = None, call: Optional[ControlCall] = None) -> Optional[Dict[str, list]]:
        """The summed, strength-scaled control dict of this stack for one UNet batch (None: no control). `call`
        is the batch in both conventions, needed when a ComfyUI-style control is stacked below."""
        if model is None:
            raise ValueError("the control runtime needs the MODEL being sampled")
        self._check_family(model)
        previous = None
        if is_comfy_control(self.previous):
            if call is None:
                raise ValueError("a ComfyUI-style control is stacked below this ControlNet but the sampler gave "
                                 "no ComfyUI call arguments")
            previous = comfy_residuals(self.previous, call)
        elif self.previous is not None:
            previous = self.previous.residuals(x_in, t, entries, sigma, context=context, y=y, model=model,
                                               call=call)
        if not self.is_active(sigma, model):
            return previous
        if self.hint is None:
            raise ValueError("a control was attached without a hint (set_cond_hint was never called)")
        hint = self.prepared_hint(x_in, dtype=torch.float32, model=model)
        out = self.control_model.compute(x_in, t, context, y, hint, model)
        return add_residuals(scale_residuals(out, self.strength), previous)
