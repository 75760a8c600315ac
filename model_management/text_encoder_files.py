"""Standalone text-encoder files (CLIPLoader, DualCLIPLoader): which encoder each file holds, then one stack.

A file is recognised by its layout and width: OpenCLIP layout (`transformer.resblocks.*`) or a 1024-wide model is
SD2's OpenCLIP-H; a transformers-layout model is CLIP-L. For SDXL's pair, the wider (projected) one is bigG. For
SD3 (type `sd3`: TripleCLIPLoader, DualCLIPLoader, CLIPLoader) and Flux (DualCLIPLoader type `flux`: CLIP-L and
T5-XXL) T5 is recognised by its blocks, and of two CLIPs the
wider (then deeper) one is bigG; a lone CLIP is bigG when it has bigG's size (32 layers or 1280 wide).
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

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
                            dtype: torch.dtype = torch.float32,
                            stream_t5: Optional[Tuple[str, int]] = None) -> TextEncoderModel:
    """`dtype`: what the encoders compute in (each tensor converted as it is read). `stream_t5`: (path, window
    bytes) of a T5-XXL file larger than the RAM budget, left in its memory-mapped file and streamed
    (model_management/host_streaming.py; SD3 / Flux only)."""
    from diffusion.text import ClipTextStack
    mapping = None
    states = []
    for p in paths:
        if stream_t5 is not None and p == stream_t5[0]:
            from model_management.mapped_weights import MappedFile
            mapping = MappedFile(p)
            states.append(_strip(mapping.state_dict()))
        else:
            states.append(_strip(load_state_dict(p, dtype_for=lambda key, stored: dtype)))
    if kind in ("sd3", "flux"):
        model = _dit_stack(states, paths, embeddings, dtype, kind, stored_t5=mapping is not None)
        if mapping is not None:
            _stream_t5(model.stack, mapping, stream_t5[1], dtype)
        return model
    if mapping is not None:
        raise ModelFileError(f"{os.path.basename(stream_t5[0])}: only SD3 / Flux T5-XXL files are streamed")
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


def _stream_t5(stack, mapping, window: int, dtype: torch.dtype) -> None:
    """T5's blocks cast to the compute dtype block by block (its code reads weight dtypes inside a block), its
    layers beyond `window` streamed from the mapped file."""
    from model_management.host_streaming import stream_from_file
    from model_management.weight_casting import store_blockwise
    t5 = stack.encoder("t5xxl")
    if t5 is None:
        raise ModelFileError(f"{os.path.basename(mapping.path)}: not a T5-XXL text encoder")
    store_blockwise(t5.model, t5.model.encoder.block, dtype)
    stream_from_file(t5.model, mapping, window)


def _dit_stack(states: List[dict], paths: List[str], embeddings, dtype: torch.dtype, kind: str,
               stored_t5: bool = False) -> TextEncoderModel:
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
        stack = stack_kind.from_role_weights(roles, dtype=dtype, embeddings=embedding_library(embeddings),
                                             stored_t5=stored_t5)
    except ValueError as exc:
        raise ModelFileError(f"{names}: {exc}")
    return TextEncoderModel(stack, kind, ";".join(paths))
