"""Turning weight files into MODEL, CLIP and VAE objects.

`load_checkpoint` reads a single-file checkpoint (or a diffusers folder), detects its family, splits the state dict
by the fixed prefixes, builds each network with the config its shapes imply, and loads the weights strictly. Keys
that nothing consumed are reported (real files carry EMA copies and schedule buffers, which are recognised and
skipped; anything else is listed in `LoadedCheckpoint.leftovers`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from model_management import detection
from model_management.detection import ModelFamily, UnsupportedModelError
from model_management.file_loading import SKIP, ModelFileError, convert_state, load_state_dict, split_prefix
from model_management.model_objects import DiffusionModel, TextEncoderModel, VAEModel
from model_management.precision_policy import PrecisionPolicy


@dataclass
class LoadedCheckpoint:
    model: Optional[DiffusionModel]
    clip: Optional[TextEncoderModel]
    vae: Optional[VAEModel]
    family: ModelFamily
    leftovers: List[str] = field(default_factory=list)


def _load_strict(module: torch.nn.Module, state: Dict[str, torch.Tensor], what: str, path: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
        raise ModelFileError(f"{os.path.basename(path)}: the {what} weights do not fit the detected layout: "
                             f"{detail}")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} weight(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} weight(s), e.g. {', '.join(unexpected[:3])}")
    if problems:
        raise ModelFileError(f"{os.path.basename(path)}: the {what} weights do not fit the detected layout: "
                             + "; ".join(problems))
    still_meta = [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if still_meta:
        raise ModelFileError(f"{os.path.basename(path)}: the {what} has tensors the file does not provide: "
                             f"{', '.join(still_meta[:3])}")


def to_compute(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Convert floating weights not yet in the compute dtype (the loaders convert while reading; this catches
    tensors a network derived itself), one tensor at a time."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point() and tensor.dtype != dtype:
            tensor.data = tensor.data.to(dtype)
    return module


def part_dtypes(precision: PrecisionPolicy):
    """`dtype_for(key, stored)` for a single-file checkpoint: each tensor straight into its part's dtype; EMA
    copies (a second UNet in some files) are not read at all."""
    unet, vae, text = precision.unet, precision.vae, precision.text_encoder

    def dtype_for(key: str, stored: torch.dtype):
        if key.startswith("model_ema."):
            return SKIP
        if key.startswith(detection.UNET_PREFIX):
            return unet
        if key.startswith((detection.VAE_PREFIX, detection.FLUX_VAE_PREFIX)):
            return vae
        return text  # the text encoders (their prefixes depend on the family) and small schedule buffers
    return dtype_for


def build_unet(state: Dict[str, torch.Tensor], path: str, dtype: torch.dtype = torch.float32,
               keep_stored: bool = False) -> torch.nn.Module:
    """The diffusion network of `state` (prefix removed): a UNet, SD3's MMDiT (diffusion/mmdit) or Flux
    (diffusion/flux). `keep_stored`: the network takes the very tensors of `state` as they are (no conversion to
    `dtype`; views of a mapped file stay views)."""
    from diffusion.flux.config import is_flux
    from diffusion.mmdit.config import is_mmdit
    if is_mmdit(state):
        from diffusion.mmdit.config import detect_mmdit_config as detect
        from diffusion.mmdit.model import MMDiT as network
        what = "MMDiT"
    elif is_flux(state):
        from diffusion.flux.config import detect_flux_config as detect
        from diffusion.flux.model import Flux as network
        what = "Flux transformer"
    else:
        from diffusion.unet.config import detect_unet_config as detect
        from diffusion.unet.model import UNetModel as network
        what = "UNet"
    try:
        config = detect(state)
    except ValueError as exc:
        raise ModelFileError(f"{os.path.basename(path)}: {exc}")
    with torch.device("meta"):
        unet = network(config)
    if keep_stored:
        _load_strict(unet, state, what, path)
        state.clear()
        return unet.eval().requires_grad_(False)
    convert_state(state, lambda key, stored: dtype)
    _load_strict(unet, state, what, path)
    state.clear()  # the module holds the tensors now
    return to_compute(unet, dtype).eval().requires_grad_(False)


def build_vae(state: Dict[str, torch.Tensor], path: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from diffusion.vae.config import detect_vae_config
    from diffusion.vae.model import AutoencoderKL
    try:
        config = detect_vae_config(state)
    except ValueError as exc:
        raise ModelFileError(f"{os.path.basename(path)}: {exc}")
    with torch.device("meta"):
        vae = AutoencoderKL(config)
    state = vae.adapt_state_dict(state) if hasattr(vae, "adapt_state_dict") else state
    convert_state(state, lambda key, stored: dtype)
    _load_strict(vae, state, "VAE", path)
    state.clear()
    return to_compute(vae, dtype).eval().requires_grad_(False)


def embedding_library(find) -> object:
    """An EmbeddingLibrary over a `name -> path or None` lookup (None: no embeddings folder)."""
    if find is None:
        return None
    from model_management.embeddings import EmbeddingLibrary
    return EmbeddingLibrary(find)


def build_text_encoders(family: str, state: Dict[str, torch.Tensor], path: str,
                        embeddings=None, dtype: torch.dtype = torch.float32) -> TextEncoderModel:
    """The text encoder(s) of a checkpoint, from the family's fixed prefixes."""
    from diffusion.text import ClipTextStack
    from diffusion.text.flux_text import FluxTextStack
    from diffusion.text.sd3_text import SD3TextStack
    try:
        if family in ("sd3", "flux"):
            kind = SD3TextStack if family == "sd3" else FluxTextStack
            stack = kind.from_checkpoint(state, dtype=dtype, embeddings=embedding_library(embeddings))
        else:
            stack = ClipTextStack.from_checkpoint(state, family, dtype=dtype,
                                                  embeddings=embedding_library(embeddings))
    except ValueError as exc:
        raise ModelFileError(f"{os.path.basename(path)}: {exc}")
    return TextEncoderModel(stack, family, path)


def pop_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Move the entries under `prefix` out of `state` (prefix removed), so that once a network has taken its
    weights nothing else holds the file's copies: the load peak stays near the converted size, not double it."""
    keys = [k for k in state if k.startswith(prefix)]
    return {k[len(prefix):]: state.pop(k) for k in keys}


def _ignored(key: str) -> bool:
    return key.startswith(detection.IGNORED_PREFIXES) or key.endswith(".position_ids")


def _mapped_checkpoint_state(path: str, dtype_for) -> tuple:
    """(state, metadata, mapping) of a checkpoint whose diffusion model stays in the mapped file: its tensors are
    views of the map as stored, every other part's converted (read) as usual."""
    from model_management.mapped_weights import MappedFile
    mapping = MappedFile(path)
    state = {}
    for key in mapping.keys():
        tensor = mapping.tensor(key)
        if key.startswith(detection.UNET_PREFIX):
            state[key] = tensor
            continue
        target = dtype_for(key, tensor.dtype)
        if target == SKIP:
            continue
        state[key] = tensor.to(target) if target is not None and tensor.is_floating_point() else tensor.clone()
    return state, mapping.metadata, mapping


def load_checkpoint(path: str, want_model: bool = True, want_clip: bool = True, want_vae: bool = True,
                    prediction: Optional[str] = None, embeddings=None,
                    precision: Optional[PrecisionPolicy] = None,
                    stream_window: Optional[int] = None) -> LoadedCheckpoint:
    """MODEL, CLIP and VAE from one checkpoint file. `prediction` ("eps"/"v") overrides detection. `precision`:
    the dtype of each part (default fp32 throughout); tensors are converted as they are read. `stream_window`:
    leave the diffusion model in the memory-mapped file, streaming what does not fit these bytes
    (model_management/host_streaming.py; for a checkpoint larger than the RAM budget)."""
    precision = precision or PrecisionPolicy.full()
    dtype_for = part_dtypes(precision)
    mapping = None
    if stream_window is not None:
        state, metadata, mapping = _mapped_checkpoint_state(path, dtype_for)
    elif os.path.isdir(path):
        from model_management.diffusers_folder import load_diffusers_folder
        state, metadata = load_diffusers_folder(path)
        convert_state(state, dtype_for)
    else:
        state, metadata = load_state_dict(path, with_metadata=True, dtype_for=dtype_for)
    name = os.path.basename(path.rstrip("/"))
    try:
        family = detection.detect_checkpoint(state, metadata, name)
    except UnsupportedModelError as exc:
        raise ModelFileError(str(exc))
    if prediction is not None:
        family.prediction = prediction
        family.notes.append(f"prediction type {prediction} set by configuration")
    consumed_prefixes = [detection.UNET_PREFIX, family.vae_prefix] + family.text_prefixes
    leftovers = [k for k in state if not k.startswith(tuple(consumed_prefixes)) and not _ignored(k)]
    model = clip = vae = None
    if want_model:
        unet = build_unet(pop_prefix(state, detection.UNET_PREFIX), path, precision.unet,
                          keep_stored=mapping is not None)
        if mapping is not None:
            from model_management.host_streaming import stream_from_file
            from model_management.weight_casting import store_in
            store_in(unet, None, precision.unet)
            stream_from_file(unet, mapping, stream_window)
        model = DiffusionModel(unet, family, path)
    if want_vae:
        vae_state = pop_prefix(state, family.vae_prefix)
        if not vae_state:
            raise ModelFileError(f"{name}: the checkpoint has no VAE weights ({family.vae_prefix}*); "
                                 f"load a VAE separately with Load VAE")
        vae = VAEModel(build_vae(vae_state, path, precision.vae), path)
    if want_clip:
        if family.text_prefixes:
            clip = build_text_encoders(family.name, state, path, embeddings, precision.text_encoder)
        else:  # as ComfyUI: no CLIP output; the text encode nodes say to load one with a CLIP loader
            family.notes.append("no text encoder in the file: load one with a CLIP loader")
    return LoadedCheckpoint(model, clip, vae, family, leftovers)


def load_vae_file(path: str, dtype: torch.dtype = torch.float32) -> VAEModel:
    state = load_state_dict(path, dtype_for=lambda key, stored: dtype)
    for prefix in (detection.VAE_PREFIX, detection.FLUX_VAE_PREFIX):
        if detection.has_prefix(state, prefix):
            state = split_prefix(state, prefix)
            break
    if "decoder.conv_in.weight" not in state:
        raise ModelFileError(f"{os.path.basename(path)}: not a VAE; it looks like {detection.describe_other(state)}")
    return VAEModel(build_vae(state, path, dtype), path)


def load_unet_file(path: str, dtype: torch.dtype = torch.float32) -> DiffusionModel:
    state, metadata = load_state_dict(path, with_metadata=True, dtype_for=lambda key, stored: dtype)
    try:
        family, unet_state = detection.detect_unet_only(state, metadata, os.path.basename(path))
    except UnsupportedModelError as exc:
        raise ModelFileError(str(exc))
    return DiffusionModel(build_unet(unet_state, path, dtype), family, path)


def load_unet_mapped(path: str, compute: torch.dtype, window_bytes: int,
                     storage: Optional[torch.dtype] = None) -> DiffusionModel:
    """A bare diffusion-model file larger than the RAM budget, left in its file: the network's weights are views
    of the mapped file in their stored dtype, each layer cast to `compute` as it runs (rounded through `storage`,
    UNETLoader's fp8 weight_dtype, when one is asked for), and the layers beyond `window_bytes` streamed
    (model_management/host_streaming.py)."""
    from model_management.host_streaming import stream_from_file
    from model_management.mapped_weights import MappedFile
    from model_management.weight_casting import store_in
    mapping = MappedFile(path)
    state = mapping.state_dict()
    try:
        family, unet_state = detection.detect_unet_only(state, mapping.metadata, os.path.basename(path))
    except UnsupportedModelError as exc:
        raise ModelFileError(str(exc))
    del state  # unet_state holds the views now (the same dict, or its renamed copy)
    unet = build_unet(unet_state, path, compute, keep_stored=True)
    store_in(unet, None, compute, via=storage)
    stream_from_file(unet, mapping, window_bytes)
    return DiffusionModel(unet, family, path)
