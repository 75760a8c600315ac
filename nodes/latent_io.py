"""Latents as files: SaveLatent writes `.latent` files to the output folder, LoadLatent reads them from the input
folder.

A `.latent` file is a safetensors file holding the raw (unscaled) latent under the key "latent_tensor", plus an
empty tensor named "latent_format_version_0" marking the format; the workflow is kept in the file's metadata
("prompt" and each extra_pnginfo key, JSON) as in saved PNGs. Files without the marker come from an older format
that stored latents multiplied by the SD latent scale 0.18215: they are divided by it on load. Only safetensors is
read (no pickle), and names go through `Paths`, which refuses anything outside the input folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, List

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model_management.paths import PathError
from nodes.declare import Combo, Hidden, Output, Socket, String, node

EXTENSION = ".latent"
TENSOR_KEY = "latent_tensor"
FORMAT_MARKER = "latent_format_version_0"
OLD_FORMAT_SCALE = 0.18215
_LINKED = object()


def _paths(services: Any) -> Any:
    if services is None or getattr(services, "paths", None) is None:
        raise RuntimeError("no folders are configured for this engine (Services.paths is missing)")
    return services.paths


def latent_files(services: Any) -> List[str]:
    """Combo choices: the `.latent` files at the top of the input folder, read fresh."""
    if services is None or getattr(services, "paths", None) is None:
        return []
    folder = services.paths.input_dir
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder)
                  if name.endswith(EXTENSION) and not name.startswith(".")
                  and os.path.isfile(os.path.join(folder, name)))


def _metadata(prompt: Any, extra_pnginfo: Any, settings: Any) -> dict:
    if settings and settings.get("disable_metadata"):
        return {}
    meta = {}
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            meta[str(key)] = json.dumps(value)
    return meta


@node(category="_for_testing", display_name="SaveLatent", output_node=True)
class SaveLatent:
    """Save latents as a `.latent` file in the output folder (with the workflow in its metadata). Move it to the
    input folder to load it back with LoadLatent."""
    samples = Socket("LATENT", tooltip="The latents to save (the whole batch goes into one file).")
    filename_prefix = String("latents/ComfyUI", tooltip="File name prefix; may contain subfolders and %width%, "
                             "%height%, %year%... placeholders, as for Save Image.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, samples, filename_prefix="latents/ComfyUI", prompt=None, extra_pnginfo=None):
        if not isinstance(samples, dict) or not isinstance(samples.get("samples"), torch.Tensor):
            raise ValueError("samples is not a LATENT (a dict with a 'samples' tensor)")
        tensor = samples["samples"]
        services = ctx.services if ctx is not None else None
        try:
            folder, base, counter, subfolder = _paths(services).save_path(
                filename_prefix, "output", int(tensor.shape[-1]) * 8, int(tensor.shape[-2]) * 8)
        except PathError as exc:
            raise ValueError(f"filename_prefix {filename_prefix!r} cannot be used: {exc}; it must name a file "
                             f"inside the output folder") from None
        filename = f"{base}_{counter:05}_{EXTENSION}"
        data = {TENSOR_KEY: tensor.detach().float().cpu().contiguous(), FORMAT_MARKER: torch.tensor([])}
        meta = _metadata(prompt, extra_pnginfo, getattr(services, "settings", None))
        save_file(data, os.path.join(folder, filename), metadata=meta or None)
        return {"ui": {"latents": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}, "result": ()}


def read_latent_file(path: str) -> torch.Tensor:
    """The raw latent stored in a `.latent` file (old-format files are unscaled by 1/0.18215)."""
    try:
        data = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{os.path.basename(path)} is not a readable .latent (safetensors) file: {exc}") from None
    if TENSOR_KEY not in data:
        raise ValueError(f"{os.path.basename(path)} has no {TENSOR_KEY!r} tensor; keys: {sorted(data)[:5]}")
    multiplier = 1.0 if FORMAT_MARKER in data else 1.0 / OLD_FORMAT_SCALE
    return data[TENSOR_KEY].float() * multiplier


def _resolve(services: Any, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"latent: invalid file name {name!r}")
    try:
        return _paths(services).annotated_path(name, "input")
    except PathError as exc:
        raise ValueError(f"latent: {name!r} cannot be used: {exc}") from None


@node(category="_for_testing", display_name="LoadLatent",
      outputs=[Output("LATENT", tooltip="The latents stored in the file.")])
class LoadLatent:
    """Load latents from a `.latent` file in the input folder (as written by SaveLatent)."""
    latent = Combo(latent_files, tooltip="A .latent file in the input folder.")

    def run(self, ctx, latent):
        path = _resolve(ctx.services, latent)
        if not os.path.isfile(path):
            raise ValueError(f"latent: no file {latent!r} in the input folder")
        return ({"samples": read_latent_file(path)},)

    def fingerprint(self, ctx, latent=_LINKED, **_):
        if latent is _LINKED:
            return float("nan")
        digest = hashlib.sha256()
        with open(_resolve(ctx.services, latent), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    def validate(self, services, latent=_LINKED):
        if latent is _LINKED or services is None:
            return True
        try:
            path = _resolve(services, latent)
        except ValueError as exc:
            return str(exc)
        return True if os.path.isfile(path) else f"Invalid latent file: {latent}"


NODES = [SaveLatent, LoadLatent]
