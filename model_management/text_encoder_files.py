"""Standalone text-encoder files (CLIPLoader, DualCLIPLoader): which encoder each file holds, then one stack.

A file is recognised by its layout and width: OpenCLIP layout (`transformer.resblocks.*`) or a 1024-wide model is
SD2's OpenCLIP-H; a transformers-layout model is CLIP-L. For SDXL's pair, the wider (projected) one is bigG. For
SD3 (type `sd3`: TripleCLIPLoader, DualCLIPLoader, CLIPLoader) and Flux (DualCLIPLoader type `flux`: CLIP-L and
T5-XXL) T5 is recognised by its blocks, and of two CLIPs the
wider (then deeper) one is bigG; a lone CLIP is bigG when it has bigG's size (32 layers or 1280 wide).
"""
from __future__ import annotations

import os
from typing import List

import torch

from model_management.checkpoints import embedding_library
from model_management.file_loading import ModelFileError, load_state_dict
from model_management.model_objects import TextEncoderModel


def _strip(state: dict) -> dict:
    """Drop a wrapper prefix some exports add before `text_model.` or `transformer.`."""
    for marker in ("text_model.", "transformer.resblocks.", "token_embedding.weight", "encoder.block."):
        for key in state:
            at = key.find(marker)
            if at > 0:
                prefix = key[:at]
                return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if at == 0:
                return state
    return state


def _width(state: dict, path: str) -> int:
    for key in ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"):
        if key in state:
            return int(state[key].shape[1])
    raise ModelFileError(f"{os.path.basename(path)}: not a CLIP text encoder (no token embedding)")


def _is_open_clip(state: dict) -> bool:
    return any(k.startswith("transformer.resblocks.") for k in state)


def load_text_encoder_files(paths: List[str], kind: str, embeddings=None,
                            dtype: torch.dtype = torch.float32) -> TextEncoderModel:
    """`dtype`: what the encoders compute in (each tensor converted as it is read)."""
    from diffusion.text import ClipTextStack
    states = [_strip(load_state_dict(p, dtype_for=lambda key, stored: dtype)) for p in paths]
    if kind in ("sd3", "flux"):
        return _dit_stack(states, paths, embeddings, dtype, kind)
    widths = [_width(s, p) for s, p in zip(states, paths)]
    if kind == "sdxl":
        if len(states) != 2:
            raise ModelFileError("SDXL needs two text encoders: CLIP-L and OpenCLIP-bigG")
        order = sorted(range(2), key=lambda i: (widths[i], "text_projection.weight" in states[i]
                                                 or "text_projection" in states[i]))
        states, paths = [states[i] for i in order], [paths[i] for i in order]
        family = "sdxl"
    elif kind == "stable_diffusion":
        if len(states) != 1:
            raise ModelFileError("stable_diffusion takes one text encoder file")
        family = "sd2" if _is_open_clip(states[0]) or widths[0] == 1024 else "sd1"
    else:
        raise ModelFileError(f"unsupported text encoder type {kind!r}")
    try:
        stack = ClipTextStack.from_encoder_weights(states, family, dtype=dtype,
                                                   embeddings=embedding_library(embeddings))
    except ValueError as exc:
        names = ", ".join(os.path.basename(p) for p in paths)
        raise ModelFileError(f"{names}: {exc}")
    return TextEncoderModel(stack, family, ";".join(paths))



def _layers(state: dict) -> int:
    return sum(1 for k in state if k.endswith(("layer_norm1.weight", "ln_1.weight")))


def _dit_stack(states: List[dict], paths: List[str], embeddings, dtype: torch.dtype, kind: str) -> TextEncoderModel:
    """SD3's encoders (up to three files) or Flux's (CLIP-L and T5-XXL), each placed in its role by what it
    holds."""
    from diffusion.text.flux_text import FluxTextStack
    from diffusion.text.sd3_text import SD3TextStack
    from diffusion.text.t5_encoder import is_t5_state
    names = ", ".join(os.path.basename(p) for p in paths)
    t5 = [s for s in states if is_t5_state(s)]
    clips = [(s, p) for s, p in zip(states, paths) if not is_t5_state(s)]
    if kind == "flux" and (len(t5) != 1 or len(clips) > 1):
        raise ModelFileError(f"{names}: Flux takes one T5-XXL and one CLIP-L")
    if len(t5) > 1 or len(clips) > 2:
        raise ModelFileError(f"{names}: SD3 takes at most one T5-XXL and two CLIPs (CLIP-L and CLIP-G)")
    sizes = [(_width(s, p), _layers(s)) for s, p in clips]
    roles: dict = {"t5xxl": t5[0]} if t5 else {}
    if len(clips) == 2:
        small, big = sorted(range(2), key=lambda i: sizes[i])
        roles["clip_l"], roles["clip_g"] = clips[small][0], clips[big][0]
    elif clips:
        width, layers = sizes[0]
        big = kind == "sd3" and (layers >= 32 or width >= 1280)
        roles["clip_g" if big else "clip_l"] = clips[0][0]
    stack_kind = SD3TextStack if kind == "sd3" else FluxTextStack
    try:
        stack = stack_kind.from_role_weights(roles, dtype=dtype, embeddings=embedding_library(embeddings))
    except ValueError as exc:
        raise ModelFileError(f"{names}: {exc}")
    return TextEncoderModel(stack, kind, ";".join(paths))
