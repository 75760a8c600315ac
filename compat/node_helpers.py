"""`node_helpers` for node packs: conditioning options, Pillow loading, hashing, dtype names, alpha fixing."""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

import torch
from PIL import Image, ImageFile, UnidentifiedImageError


def conditioning_set_values(conditioning: list, values: dict = {}, append: bool = False) -> list:  # noqa: B006
    """A copy of CONDITIONING with `values` set in every entry's options; with `append`, a value already there
    is combined with the new one by `+` (lists extend)."""
    out = []
    for tensor, options in conditioning:
        options = dict(options)
        for key, value in values.items():
            previous = options.get(key) if append else None
            options[key] = value if previous is None else previous + value
        out.append([tensor, options])
    return out


def pillow(fn: Callable, arg: Any) -> Any:
    """fn(arg), retried with truncated images allowed when Pillow refuses a damaged file."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def hasher() -> Callable:
    """The hash constructor for file fingerprints: `args.default_hashing_function` (sha256 unless set)."""
    from comfy.cli_args import args
    return {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
            "sha512": hashlib.sha512}[args.default_hashing_function]


def string_to_torch_dtype(string: str) -> Optional[torch.dtype]:
    """"fp32" / "fp16" / "bf16" -> the torch dtype; any other string -> None (callers then use their default)."""
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple:
    """Channel counts reconciled as ComfyUI does: a source with more channels is cut to the destination's; a
    destination with more channels gains one further channel of ones (the source is left as it is)."""
    dest_channels, source_channels = destination.shape[-1], source.shape[-1]
    if source_channels > dest_channels:
        return destination, source[..., :dest_channels]
    if dest_channels > source_channels:
        ones = torch.ones_like(destination[..., :1])
        return torch.cat([destination, ones], dim=-1), source
    return destination, source


__all__ = ["conditioning_set_values", "pillow", "hasher", "string_to_torch_dtype", "image_alpha_fix", "Image"]
