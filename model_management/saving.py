"""Writing MODEL / CLIP / VAE objects back to files, with every recorded patch (LoRAs, merges) baked in.

The effective weights are computed out of place (`weight_patches.patched_weight`, the same arithmetic the patcher
applies), so the live modules -- shared with every cached workflow -- are never touched, and a saved model gives
exactly the outputs of the patched source. Tensors keep the dtype they have in memory (no silent fp16 rounding;
pass `dtype` to store another precision).

Layouts are those of released files, so other tools load them too:

- checkpoint: UNet under `model.diffusion_model.`, VAE under `first_stage_model.`, text encoders under the family's
  prefixes -- CLIP-L in transformers' layout (`...transformer.text_model.*`), OpenCLIP-H / bigG in OpenCLIP's
  (`...model.transformer.resblocks.*`, fused q/k/v, `text_projection` as [width, proj]). `v_pred` / `ztsnr` marker
  keys and `modelspec.*` metadata carry the prediction type.
- VAE: the bare LDM keys (`encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`).
- CLIP: one file per encoder, transformers' layout (`text_model.*`, plus `text_projection.weight` for projected
  encoders: OpenCLIP-H and bigG).

CLIP skip and textual-inversion embeddings are settings of a workflow, not weights: they are not saved.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Optional

import torch

from model_management import detection
from model_management.model_objects import DiffusionModel, TextEncoderModel, VAEModel, release_device
from model_management.weight_patches import PatchSpec, _lookup, group_patches, patched_weight

OPEN_CLIP_ROLES = ("clip_h", "clip_g")  # stored in OpenCLIP's layout inside checkpoints
_HF_TOP = ("embeddings.", "encoder.", "final_layer_norm.")
_ARCHITECTURE = {"sd1": "stable-diffusion-v1", "sdxl": "stable-diffusion-xl-v1-base",
                 "sdxl_refiner": "stable-diffusion-xl-v1-refiner"}
_IMPLEMENTATION = {"sd1": "https://github.com/CompVis/stable-diffusion",
                   "sd2": "https://github.com/Stability-AI/stablediffusion",
                   "sdxl": "https://github.com/Stability-AI/generative-models",
                   "sdxl_refiner": "https://github.com/Stability-AI/generative-models"}


class SaveError(ValueError):
    """Objects that cannot be written together (e.g. an SD1 text encoder with an SDXL model)."""


# -- effective weights ---------------------------------------------------------------------------------------------

def effective_state(module: torch.nn.Module, patches: Iterable[PatchSpec] = ()) -> Dict[str, torch.Tensor]:
    """The module's state dict with its patches applied out of place (aliased names share one patched tensor);
    untouched entries are the module's own tensors (detached, not copied)."""
    state = module.state_dict(keep_vars=True)
    by_tensor: Dict[int, list] = {}
    names: Dict[int, str] = {}
    for name, items in group_patches(patches).items():
        param = _lookup(module, name)
        by_tensor.setdefault(id(param), []).extend(items)
        names.setdefault(id(param), name)
    patched = {}
    with torch.no_grad():
        for key, items in by_tensor.items():
            name = names[key]
            patched[key] = patched_weight(_lookup(module, name), items, name)
    return {name: patched.get(id(t), t).detach() for name, t in state.items()}


def _cast(state: Dict[str, torch.Tensor], dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    if dtype is None:
        return state
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def unet_state(model: DiffusionModel, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """The UNet's LDM state dict (no prefix) with the model's patches baked in."""
    release_device(model)  # read the host weights, not a device copy in the compute dtype
    return _cast(effective_state(model.unet, model.patches), dtype)


def vae_state(vae: VAEModel, dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """The VAE's LDM state dict (no prefix)."""
    release_device(vae)
    return _cast(effective_state(vae.vae), dtype)


def text_encoder_states(clip: TextEncoderModel, dtype: Optional[torch.dtype] = None) -> Dict[str, Dict[str, Any]]:
    """Per encoder role (clip_l / clip_h / clip_g, in the stack's order): its weights in transformers' layout
    (`text_model.*`, `text_projection.weight`) with the CLIP's patches baked in."""
    release_device(clip)
    stack = clip.stack
    state = effective_state(stack, getattr(clip, "patches", []))
    out: Dict[str, Dict[str, torch.Tensor]] = {}
    for index, encoder in enumerate(stack.encoders):
        prefix = f"encoders.{index}.model."
        hf: Dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if not key.startswith(prefix) or key.endswith("position_ids"):
                continue
            rest = key[len(prefix):]
            if rest.startswith(_HF_TOP):
                rest = "text_model." + rest
            hf[rest] = value
        out[encoder.role] = _cast(hf, dtype)
    return out


def to_open_clip(hf: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers-layout CLIP text weights -> OpenCLIP's (as SD2 / SDXL checkpoints store them)."""
    from diffusion.synthetic_checkpoints import to_open_clip_layout
    out = to_open_clip_layout(hf)
    dtype = hf["text_model.embeddings.token_embedding.weight"].dtype
    out["logit_scale"] = out["logit_scale"].to(dtype)
    return out


def _text_prefixes(family: str) -> Dict[str, str]:
    from diffusion.text.clip_encoders import CHECKPOINT_PREFIXES
    return CHECKPOINT_PREFIXES[family]


# -- checkpoints ---------------------------------------------------------------------------------------------------

def checkpoint_state(model: DiffusionModel, clip: TextEncoderModel, vae: VAEModel,
                     dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """The single-file checkpoint state dict in the layout of the model's family."""
    family = model.family.name
    if clip.family_name != family:
        raise SaveError(f"the CLIP is a {clip.family_name} text encoder but the model is {family}; a checkpoint "
                        f"holds the text encoder(s) of its own family")
    state: Dict[str, torch.Tensor] = {}
    state.update({detection.UNET_PREFIX + k: v for k, v in unet_state(model, dtype).items()})
    state.update({detection.VAE_PREFIX + k: v for k, v in vae_state(vae, dtype).items()})
    prefixes = _text_prefixes(family)
    for role, hf in text_encoder_states(clip, dtype).items():
        weights = to_open_clip(hf) if role in OPEN_CLIP_ROLES else hf
        state.update({prefixes[role] + k: v for k, v in weights.items()})
    if model.prediction == "v":
        state["v_pred"] = torch.tensor([])
    if model.options.get("zsnr", model.family.zero_terminal_snr):
        state["ztsnr"] = torch.tensor([])
    return state


def architecture(model: DiffusionModel) -> str:
    family = model.family.name
    if family == "sd2":
        return "stable-diffusion-v2-768-v" if model.prediction == "v" else "stable-diffusion-v2-512"
    return _ARCHITECTURE.get(family, family)


def sources(*objects: Any) -> List[str]:
    """Files the objects came from, merge sources included, without repeats."""
    from model_management.merging import merge_sources
    found: Dict[str, None] = {}
    for obj in objects:
        if obj is None:
            continue
        for part in str(getattr(obj, "source", "") or "").split(";"):
            if part:
                found.setdefault(os.path.basename(part), None)
        for label in merge_sources(getattr(obj, "patches", None) or []):
            for part in label.split(";"):
                if part:
                    found.setdefault(os.path.basename(part), None)
    return list(found)


def workflow_metadata(prompt: Any = None, extra_pnginfo: Any = None) -> Dict[str, str]:
    """The workflow as ComfyUI embeds it: `prompt` (API format) and each extra_pnginfo key (e.g. `workflow`),
    JSON-encoded."""
    meta: Dict[str, str] = {}
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            meta[str(key)] = json.dumps(value)
    return meta


def checkpoint_metadata(model: DiffusionModel, clip: TextEncoderModel, vae: VAEModel, title: str = "",
                        prompt: Any = None, extra_pnginfo: Any = None) -> Dict[str, str]:
    meta = {"format": "pt", "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": architecture(model),
            "modelspec.implementation": _IMPLEMENTATION.get(model.family.name, ""),
            "modelspec.prediction_type": "v" if model.prediction == "v" else "epsilon",
            "tessera.source": json.dumps(sources(model, clip, vae))}
    if title:
        meta["modelspec.title"] = title
    meta.update(workflow_metadata(prompt, extra_pnginfo))
    return meta


# -- files ---------------------------------------------------------------------------------------------------------

def write_safetensors(path: str, state: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None) -> str:
    """Write atomically (a temporary file renamed into place): CPU, contiguous, no two entries sharing memory."""
    from safetensors.torch import save_file
    seen: set = set()
    ready: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage()
        if tensor.numel() and (storage.data_ptr() in seen
                               or storage.nbytes() != tensor.numel() * tensor.element_size()):
            tensor = tensor.clone()  # a view of a bigger or shared storage: safetensors wants each on its own
            storage = tensor.untyped_storage()
        if tensor.numel():
            seen.add(storage.data_ptr())
        ready[key] = tensor
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".saving-", suffix=".safetensors", dir=folder)
    os.close(fd)
    try:
        save_file(ready, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def save_checkpoint(path: str, model: DiffusionModel, clip: TextEncoderModel, vae: VAEModel,
                    metadata: Optional[Dict[str, str]] = None, dtype: Optional[torch.dtype] = None) -> str:
    """One single-file checkpoint; `metadata` defaults to `checkpoint_metadata` without a workflow."""
    if metadata is None:
        metadata = checkpoint_metadata(model, clip, vae, os.path.splitext(os.path.basename(path))[0])
    return write_safetensors(path, checkpoint_state(model, clip, vae, dtype), metadata)


def save_vae(path: str, vae: VAEModel, metadata: Optional[Dict[str, str]] = None,
             dtype: Optional[torch.dtype] = None) -> str:
    meta = {"format": "pt", "tessera.source": json.dumps(sources(vae))}
    meta.update(metadata or {})
    return write_safetensors(path, vae_state(vae, dtype), meta)


def save_text_encoder(path: str, clip: TextEncoderModel, role: str, metadata: Optional[Dict[str, str]] = None,
                      dtype: Optional[torch.dtype] = None) -> str:
    """One encoder of the CLIP (`role`: clip_l / clip_h / clip_g) in transformers' layout."""
    states = text_encoder_states(clip, dtype)
    if role not in states:
        raise SaveError(f"this {clip.family_name} CLIP has no {role} encoder (it has {', '.join(states)})")
    meta = {"format": "pt", "tessera.source": json.dumps(sources(clip)), "tessera.text_encoder": role}
    meta.update(metadata or {})
    return write_safetensors(path, states[role], meta)
