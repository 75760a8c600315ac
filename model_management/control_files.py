"""Loading control models from weight files: format detection, diffusers -> LDM renaming, diff ControlNets.

Formats, checked in this order (the first that claims a state dict wins):
  - control-LoRA and T2I-adapter: built by diffusion/controlnet/control_lora.py and t2i_adapter.py;
  - diffusers ControlNetModel (`controlnet_cond_embedding.*`, `controlnet_down_blocks.N`, `controlnet_mid_block`):
    renamed to the LDM layout by the published key correspondence, then loaded like a single-file one;
  - single-file LDM ControlNet (`input_hint_block.N`, `zero_convs.N.0`, ..., optionally under `control_model.`);
  - Stability's SD3.5 ControlNets (`transformer_blocks.N.adaLN_modulation`, `controlnet_blocks.N`,
    `pos_embed_input`): diffusion/mmdit/controlnet.py; SD3 ControlNets in diffusers' layout are refused by name.
A "diff" ControlNet stores its encoder weights as the difference from a base UNet and carries a `difference` marker
key; loading it with a MODEL adds that MODEL's (unpatched) UNet weights to every key the two share.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, Mapping, Optional

import torch

from model_management.diffusers_folder import diffusers_unet_key_to_ldm, ldm_unet_key_to_diffusers, unet_layout
from model_management.file_loading import load_state_dict

from diffusion.controlnet import control_lora, t2i_adapter
from diffusion.mmdit import controlnet as sd3_controlnet
from diffusion.controlnet.model import (CONTROL_PREFIX, ControlNet, ControlNetControl, detect_controlnet_config,
                                        strip_control_prefix)
from model_management.detection import describe_other
from model_management.model_objects import release_device

DIFFERENCE_MARKER = "difference"
_HINT_STEM, _HINT_OUT = "controlnet_cond_embedding.conv_in.", "controlnet_cond_embedding.conv_out."


# ---- format detection --------------------------------------------------------------------------------------------
def is_diffusers_controlnet(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block."))
               for k in sd)


def is_ldm_controlnet(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("input_hint_block.", CONTROL_PREFIX + "input_hint_block.", "zero_convs.",
                             CONTROL_PREFIX + "zero_convs.")) for k in sd)


# ---- diffusers <-> LDM key correspondence ------------------------------------------------------------------------
def _hint_blocks(keys) -> int:
    found = {int(m.group(1)) for k in keys for m in [re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k)] if m}
    return max(found) + 1 if found else 0


def diffusers_controlnet_key_to_ldm(key: str, per_level: int, hint_blocks: int) -> Optional[str]:
    """One diffusers ControlNetModel name in the LDM layout (no `control_model.` prefix); None if unknown."""
    if key.startswith(_HINT_STEM):
        return "input_hint_block.0." + key[len(_HINT_STEM):]
    if key.startswith(_HINT_OUT):
        return f"input_hint_block.{2 * (hint_blocks + 1)}." + key[len(_HINT_OUT):]
    m = re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key)
    if m:
        return f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"
    m = re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key)
    if m:
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if key.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + key[len("controlnet_mid_block."):]
    if key.startswith(("down_blocks.", "mid_block.", "conv_in.", "time_embedding.", "add_embedding.")):
        return diffusers_unet_key_to_ldm(key, per_level, set())
    return None


def diffusers_to_ldm(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A diffusers ControlNetModel state dict renamed to the LDM ControlNet layout."""
    keys = list(sd)
    found = {int(m.group(1)) for k in keys for m in [re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k)] if m}
    if not found:
        raise ValueError("diffusers ControlNet without 'down_blocks.0.resnets.*' keys: not a ControlNetModel")
    per_level, hint_blocks = max(found) + 1, _hint_blocks(keys)
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        new = diffusers_controlnet_key_to_ldm(key, per_level, hint_blocks)
        if new is None:
            raise ValueError(f"unexpected key {key!r} in a diffusers ControlNet")
        out[new] = value
    return out


def ldm_to_diffusers(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of `diffusers_to_ldm` (for writing diffusers-layout files and comparing with diffusers)."""
    sd = strip_control_prefix(sd)
    per_level, _ = unet_layout(sd.keys())
    hint = sorted({int(k.split(".")[1]) for k in sd if k.startswith("input_hint_block.")})
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        m = re.match(r"input_hint_block\.(\d+)\.(.*)", key)
        if m:
            i = int(m.group(1))
            name = "conv_in" if i == 0 else "conv_out" if i == hint[-1] else f"blocks.{i // 2 - 1}"
            out[f"controlnet_cond_embedding.{name}.{m.group(2)}"] = value
            continue
        m = re.match(r"zero_convs\.(\d+)\.0\.(.*)", key)
        if m:
            out[f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"] = value
            continue
        if key.startswith("middle_block_out.0."):
            out["controlnet_mid_block." + key[len("middle_block_out.0."):]] = value
            continue
        new = ldm_unet_key_to_diffusers(key, per_level, set())
        if new is None:
            raise ValueError(f"unexpected key {key!r} in an LDM ControlNet")
        out[new] = value
    return out


# ---- building ----------------------------------------------------------------------------------------------------
def _add_base_weights(sd: Dict[str, torch.Tensor], model: Any) -> Dict[str, torch.Tensor]:
    """Diff ControlNet: weight = stored difference + the MODEL's UNet weight, for every key both have."""
    release_device(model)  # the host weights, not device copies in the compute dtype
    base = model.unet.state_dict()
    out = {}
    for key, value in sd.items():
        ref = base.get(key)
        if ref is not None and value.is_floating_point():
            if ref.shape != value.shape:
                raise ValueError(f"diff ControlNet key {key!r} is {list(value.shape)} but the MODEL's UNet has "
                                 f"{list(ref.shape)}: this diff ControlNet was made for another model family")
            value = (value.float() + ref.detach().float().to(value.device)).to(value.dtype)
        out[key] = value
    return out


def controlnet_from_ldm(sd: Mapping[str, torch.Tensor], source: str = "", model: Any = None,
                        dtype: Optional[torch.dtype] = None) -> ControlNetControl:
    """Build a ControlNet from an LDM-layout dict (with or without `control_model.`); `model` for diff files."""
    is_diff = DIFFERENCE_MARKER in sd
    sd = {k: v for k, v in strip_control_prefix(sd).items() if k != DIFFERENCE_MARKER}
    name = os.path.basename(source) or "the ControlNet"
    if is_diff:
        if model is None:
            raise ValueError(f"{name} is a diff ControlNet (weights stored as a difference from a base model): load "
                             f"it with DiffControlNetLoader, which adds the MODEL's weights")
        sd = _add_base_weights(sd, model)
    config = detect_controlnet_config(sd)
    with torch.device("meta"):
        network = ControlNet(config)
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    missing, unexpected = network.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{name}: ControlNet weights do not match the detected layout: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return ControlNetControl(network.eval(), source=source)


def control_model_from_state_dict(sd: Mapping[str, torch.Tensor], source: str = "", model: Any = None) -> Any:
    """Any supported control model from a state dict (see the module docstring for the formats)."""
    if control_lora.is_control_lora(sd):
        return control_lora.build_control_lora(sd, source=source)
    if t2i_adapter.is_t2i_adapter(sd):
        return t2i_adapter.build_adapter(sd, source=source)
    if is_diffusers_controlnet(sd):
        return controlnet_from_ldm(diffusers_to_ldm(sd), source, model)
    if is_ldm_controlnet(sd):
        return controlnet_from_ldm(sd, source, model)
    if sd3_controlnet.is_sd35_controlnet(sd):
        try:
            network = sd3_controlnet.build_sd35_controlnet(dict(sd), os.path.basename(source))
        except ValueError as exc:
            raise ValueError(f"{os.path.basename(source) or 'this file'}: {exc}") from None
        return sd3_controlnet.SD35ControlNetControl(network, source=source)
    if sd3_controlnet.is_sd3_diffusers_controlnet(sd):
        raise ValueError(f"{os.path.basename(source) or 'this file'} is an SD3 ControlNet in diffusers' layout "
                         f"(InstantX-style joint blocks): that format is not supported yet; Stability's SD3.5 "
                         f"ControlNets (sd3.5_large_controlnet_*) are")
    raise ValueError(f"{os.path.basename(source) or 'this file'} is not a ControlNet, T2I-adapter or control-LoRA: "
                     f"it looks like {describe_other(dict(sd))}")


def load_control_model(path: str, model: Any = None, dtype: Optional[torch.dtype] = None) -> Any:
    """A control model from a file (pickles only as plain tensors, weights_only); `dtype`: what its weights are
    converted to while reading (None: as stored)."""
    dtype_for = None if dtype is None else (lambda key, stored: dtype)
    return control_model_from_state_dict(load_state_dict(path, dtype_for=dtype_for), source=path, model=model)


def load_resident_control_model(models: Any, path: str, model: Any = None, options: tuple = ()) -> Any:
    """`load_control_model` through the model manager (model_management.residency.ModelResidency): the file is read
    once however many workflows use it, counted in the RAM budget and evicted like a checkpoint. The control model
    returned holds a handle to its weights (`_network`: the ControlNet or adapter network, or the control-LoRA's
    state dict), which reads the file again when used after eviction. `options` must tell apart different builds
    of one file (a diff ControlNet's base MODEL)."""
    import copy

    dtype = models.precision.controlnet

    def build() -> dict:
        control = load_control_model(path, model=model, dtype=dtype)
        return {"module": control._network, "control": control}

    handle = models.load_module("controlnet", path, build, tuple(options) + (dtype,))
    control = copy.copy(handle.sibling("control").get())  # the metadata; the weights go behind the handle
    control._network = handle
    return control
