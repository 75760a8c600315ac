"""`comfy.lora` for node packs: LoRA key maps for a MODEL / CLIP and reading a LoRA state dict into patches.

`model_lora_keys_unet(model)` maps every file-side spelling of each UNet module (kohya LDM and diffusers names,
dotted forms) to the ComfyUI weight name `diffusion_model.<module>.weight`; `load_lora(sd, key_map)` returns
`{weight name: patch}` built with our readers (LoRA, LoCon, LoHa, LoKr, diff), which `model.add_patches(...)` takes.
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from model_management.lora_formats import _build, _split, text_aliases, unet_aliases
from model_management.patcher_face import UNET_PREFIX

logger = logging.getLogger(__name__)


def model_lora_keys_unet(model: Any, key_map: Dict[str, str] = None) -> Dict[str, str]:
    """File-side UNet module names -> ComfyUI weight names (`diffusion_model.<module>.weight`). `model` is a MODEL
    or its `model.model` view, as packs pass either."""
    key_map = {} if key_map is None else key_map
    unet = getattr(model, "unet", None) or getattr(model, "diffusion_model", None)
    names = [n for n, _ in unet.named_parameters()] if unet is not None else \
        [k[len(UNET_PREFIX):] for k in model.model_state_dict()]
    for module, spellings in unet_aliases(names).items():
        if "#" in module:  # a third of a fused qkv (SD3's diffusers names): ComfyUI maps those with offsets
            continue
        for spelling in spellings:
            key_map[spelling] = f"{UNET_PREFIX}{module}.weight"
    return key_map


def model_lora_keys_clip(clip: Any, key_map: Dict[str, str] = None) -> Dict[str, str]:
    """File-side text-encoder module names -> ComfyUI's CLIP weight names (`clip_l.transformer.text_model...`),
    which CLIP.add_patches takes. `clip` is a CLIP or its `cond_stage_model` view."""
    key_map = {} if key_map is None else key_map
    owner = getattr(clip, "_clip", clip)
    comfy_name = {ours: comfy for comfy, ours in owner._comfy_names().items()}
    names = [n for n, _ in owner.stack.named_parameters()]
    for module, spellings in text_aliases(names, owner.family_name).items():
        for spelling in spellings:
            key_map[spelling] = comfy_name.get(f"{module}.weight", f"{module}.weight")
    return key_map


def load_lora(lora: Dict[str, Any], to_load: Dict[str, str], log_missing: bool = True) -> Dict[str, Any]:
    """{target weight name: patch} for the modules of `lora` that `to_load` names; bias diffs under the bias
    name. Keys of the file that name no module are logged (when `log_missing`)."""
    groups: Dict[str, Dict[str, Any]] = {}
    missing = []
    for key, value in lora.items():
        split = _split(key)
        target = to_load.get(split[0]) if split else None
        if target is None:
            missing.append(key)
            continue
        groups.setdefault(target, {})[split[1]] = value
    patches: Dict[str, Any] = {}
    for target, parts in groups.items():
        try:
            built = _build(parts)
        except ValueError as exc:
            logger.warning("lora: %s: %s", target, exc)
            continue
        if "weight" in built:
            patches[target] = built["weight"]
        if "bias" in built and target.endswith(".weight"):
            patches[target[:-len("weight")] + "bias"] = built["bias"]
    if log_missing and missing:
        logger.warning("lora: %d key(s) not loaded, e.g. %s", len(missing), ", ".join(missing[:3]))
    return patches
