"""Control-LoRA (Stability AI): a ControlNet stored as low-rank changes to the UNet it runs beside.

A control-LoRA file is a safetensors whose keys are LDM ControlNet parameter paths (no `control_model.` prefix)
plus the marker key `lora_controlnet`. The ControlNet's copy of the UNet encoder (time/label embedding, input
blocks, middle block) is not stored: each of its convolution/linear weights is the sampled MODEL's UNet weight plus
`up @ down` (keys `<module>.up` [out, rank(, 1, 1)] and `<module>.down` [rank, in(, kh, kw)], no scale factor).
Everything else is stored in full as `<module>.weight` / `.bias` and replaces the UNet's value: the hint encoder,
zero convs, `middle_block_out`, and the copied layers' norms and biases.

So the network can only be built once the MODEL is known: `compute` builds it on first use from `model.unet`
(as it is during sampling, LoRA patches included) and keeps it for that UNet and patch list.
"""
from __future__ import annotations

import weakref
from typing import Any, Mapping, Optional

import torch

from .base import control_family
from .control import ControlModelBase
from .model import ControlNet, ControlNetControl, controlnet_config_from_unet

MARKER = "lora_controlnet"
_SUFFIXES = (".up", ".down", ".weight", ".bias")


def is_control_lora(state_dict: Mapping[str, Any]) -> bool:
    """A control-LoRA carries the `lora_controlnet` marker key."""
    try:
        return MARKER in state_dict
    except TypeError:
        return False


def _file_family(sd: Mapping[str, torch.Tensor]) -> str:
    """The family the file's own tensors reveal: a label embedding means SDXL; otherwise the text-context width
    and the projection kind (linear for SD2, conv for SD1). Every published control-LoRA is SDXL, the default."""
    adm = ctx = linear = None
    for key, value in sd.items():
        if key.startswith("label_emb.") and key.endswith((".down", ".weight")) and value.ndim == 2:
            adm = value.shape[1]
        elif ".attn2.to_k." in key and key.endswith((".down", ".weight")):
            ctx = value.shape[1]
        elif ".proj_in." in key and key.endswith((".down", ".weight")):
            linear = value.ndim == 2
    if adm is None and ctx is None:
        return "sdxl"
    return control_family(ctx, adm, linear)


def _hint_widths(sd: Mapping[str, torch.Tensor]) -> tuple[int, tuple[int, ...]]:
    """(image channels, widths of the hint convs before the last) from `input_hint_block.N.weight` shapes."""
    idx = sorted(int(k.split(".")[1]) for k in sd if k.startswith("input_hint_block.") and k.endswith(".weight"))
    if not idx:
        raise ValueError("control-LoRA without 'input_hint_block.*.weight' keys: the hint encoder is missing")
    shapes = [tuple(sd[f"input_hint_block.{i}.weight"].shape) for i in idx]
    return shapes[0][1], tuple(s[0] for s in shapes[:-1])


def merged_state_dict(control_sd: Mapping[str, torch.Tensor], unet_sd: Mapping[str, torch.Tensor],
                      wanted: Mapping[str, torch.Tensor], dtype: torch.dtype,
                      device: torch.device) -> dict[str, torch.Tensor]:
    """The full ControlNet weights: `wanted` (the network's own state dict, for names and shapes) filled from the
    UNet, replaced by the file's full tensors, plus each `up @ down` delta. Computed in float32, cast to `dtype`."""
    out: dict[str, torch.Tensor] = {}
    for key, ref in wanted.items():
        base = unet_sd.get(key)
        if base is not None and tuple(base.shape) == tuple(ref.shape):
            out[key] = base.detach().to(device=device, dtype=torch.float32, copy=True)
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in control_sd.items():
        if key == MARKER or "__" in key or not key.endswith(_SUFFIXES) or not torch.is_tensor(value):
            continue
        if key.endswith((".up", ".down")):
            module, part = key.rsplit(".", 1)
            deltas.setdefault(module, {})[part] = value
            continue
        if key not in wanted:
            raise ValueError(f"control-LoRA key {key!r} is not a ControlNet parameter of this model's layout")
        if tuple(value.shape) != tuple(wanted[key].shape):
            raise ValueError(f"control-LoRA key {key!r} is {list(value.shape)}; the ControlNet for this MODEL "
                             f"needs {list(wanted[key].shape)}: the control-LoRA is for another model")
        out[key] = value.to(device=device, dtype=torch.float32, copy=True)
    for module, pair in deltas.items():
        key = f"{module}.weight"
        if set(pair) != {"up", "down"}:
            raise ValueError(f"control-LoRA has {module}.{next(iter(pair))} without its "
                             f"{'down' if 'up' in pair else 'up'} half")
        if key not in out:
            raise ValueError(f"control-LoRA changes {key!r}, which the MODEL's UNet does not have: the "
                             f"control-LoRA is for another model")
        up = pair["up"].to(device=device, dtype=torch.float32).flatten(1)
        down = pair["down"].to(device=device, dtype=torch.float32).flatten(1)
        weight = out[key]
        if up.shape[1] != down.shape[0] or up.shape[0] * down.shape[1] != weight.numel():
            raise ValueError(f"control-LoRA {module}.up {list(pair['up'].shape)} @ .down {list(pair['down'].shape)}"
                             f" does not make the {list(weight.shape)} weight of the MODEL's UNet")
        out[key] = weight + (up @ down).reshape(weight.shape)
    missing = [k for k in wanted if k not in out]
    if missing:
        raise ValueError(f"control-LoRA leaves ControlNet weights unset (neither in the file nor in the MODEL's "
                         f"UNet): {missing[:5]}")
    return {k: v.to(dtype) for k, v in out.items()}


class ControlLoraControl(ControlModelBase):
    """ControlModel for a control-LoRA: the ControlNet is built from the MODEL on first `compute` and cached."""

    def __init__(self, state_dict: Any, source: str = "") -> None:
        if isinstance(state_dict, Mapping):
            state_dict = {k: v for k, v in state_dict.items() if k != MARKER}
        self._network = state_dict  # the file's weights, or a model-manager handle to them (the network is built)
        self.source = source
        self.family = _file_family(self.weights)
        self.hint_channels, self.hint_widths = _hint_widths(self.weights)
        self._built: Optional[tuple] = None  # (weakref to the UNet, patch list, ControlNetControl)

    @property
    def weights(self) -> dict:
        from diffusion.handles import resolve
        return resolve(self._network)

    @property
    def name(self) -> str:
        import os
        return os.path.basename(self.source) or "the control-LoRA"

    def _patch_key(self, model: Any) -> list:
        return [(p[0], id(p[1]), p[2]) if isinstance(p, tuple) and len(p) == 3 else id(p)
                for p in getattr(model, "patches", [])]

    def controlnet_for(self, model: Any) -> ControlNetControl:
        """The ControlNet built on `model`'s UNet (rebuilt when the UNet object or its patch list changes)."""
        unet = model.unet
        patches = list(getattr(model, "patches", []))
        built = self._built
        if built is not None and built[0]() is unet and built[1] == self._patch_key(model):
            return built[2]
        self._built = None  # let the old network go before building the new one
        device = torch.device(getattr(model, "device", next(unet.parameters()).device))
        dtype = getattr(model, "dtype", next(unet.parameters()).dtype)
        config = controlnet_config_from_unet(unet.config, self.hint_channels, self.hint_widths)
        with torch.device("meta"):
            network = ControlNet(config).requires_grad_(False)
        weights = merged_state_dict(self.weights, unet.state_dict(), network.state_dict(), dtype, device)
        network.load_state_dict(weights, strict=True, assign=True)
        control = ControlNetControl(network.eval(), source=self.source)
        self._built = (weakref.ref(unet), self._patch_key(model), control, patches)
        return control

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        return self.controlnet_for(model).compute(x_in, timesteps, context, y, hint, model)


def build_control_lora(state_dict: Mapping[str, torch.Tensor], source: str = "") -> ControlLoraControl:
    """A control-LoRA control model; the network itself is built when sampling gives it a MODEL."""
    if not is_control_lora(state_dict):
        raise ValueError(f"not a control-LoRA: no {MARKER!r} marker key")
    return ControlLoraControl(state_dict, source)
