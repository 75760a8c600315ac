"""What SaveImageAdvanced writes: PNG at 8 or 16 bits, 32-bit float EXR, or AVIF (stills or one animation).

Files are named as ComfyUI's node names them, `{prefix}_{counter:05}.{ext}` (no trailing underscore, unlike
SaveImage), with `%batch_num%` in the prefix replaced by the image's index, and the workflow embedded in the
format's own place (PNG tEXt chunks, EXR header strings, an AVIF Exif item) unless `--disable-metadata`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from model_management.paths import PathError

FORMATS = ("png", "exr", "avif")


def embedded_metadata(prompt: Any, extra_pnginfo: Any, settings: Optional[dict]) -> Optional[Dict[str, Any]]:
    """`prompt` and each extra_pnginfo key (e.g. `workflow`), or None when metadata is disabled."""
    if settings and settings.get("disable_metadata"):
        return None
    metadata: Dict[str, Any] = {}
    if prompt is not None:
        metadata["prompt"] = prompt
    if isinstance(extra_pnginfo, dict):
        metadata.update({str(key): value for key, value in extra_pnginfo.items()})
    return metadata


def _pixels(image: torch.Tensor) -> np.ndarray:
    return np.nan_to_num(image.detach().to(torch.float32).cpu().numpy(), nan=0.0)


def _png(path: str, image: np.ndarray, bit_depth: str, metadata: Optional[dict]) -> None:
    texts = {key: json.dumps(value) for key, value in (metadata or {}).items()}
    if bit_depth == "16-bit":
        from nodes.png16 import encode_png16
        with open(path, "wb") as handle:
            handle.write(encode_png16(np.clip(65535.0 * image, 0, 65535).astype(np.uint16), texts))
        return
    if bit_depth != "8-bit":
        raise ValueError(f"bit_depth {bit_depth!r} is not available for PNG (8-bit or 16-bit)")
    array = np.clip(255.0 * image, 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = array[..., 0]
    elif array.shape[-1] not in (3, 4):
        raise ValueError(f"cannot save an image with {array.shape[-1]} channels as PNG (1, 3 or 4)")
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    Image.fromarray(np.ascontiguousarray(array)).save(path, pnginfo=info if texts else None, compress_level=4)


def _exr(path: str, image: np.ndarray, options: dict, metadata: Optional[dict]) -> None:
    from nodes.exr_format import encode_exr
    if options.get("bit_depth", "32-bit float") != "32-bit float":
        raise ValueError(f"bit_depth {options.get('bit_depth')!r} is not available for EXR (32-bit float)")
    with open(path, "wb") as handle:
        handle.write(encode_exr(image, options.get("input_color_space", "sRGB"), metadata or {}))


def _avif(path: str, images: np.ndarray, options: dict, metadata: Optional[dict], animated: bool) -> None:
    from nodes.avif_format import add_exif, write_avif
    mode = options.get("save_mode") or {}
    write_avif(path, images, options.get("bit_depth", "auto"), options.get("input_color_space", "sRGB"),
               int(options.get("crf", 18)), fps=float(mode.get("fps", 1.0)),
               loop_count=int(mode.get("loop_count", 0)) if animated else None)
    if metadata:
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(add_exif(data, metadata))


def save_advanced(services: Any, images: torch.Tensor, filename_prefix: str, options: dict, prompt: Any = None,
                  extra_pnginfo: Any = None) -> dict:
    """Write the batch in `options["format"]` (the DynamicCombo's choice with its inputs); the ui entry."""
    if services is None or getattr(services, "paths", None) is None:
        raise RuntimeError("no folders are configured for this engine (Services.paths is missing)")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected an IMAGE batch [B,H,W,C], got shape {list(images.shape)}")
    file_format = options.get("format", "png")
    if file_format not in FORMATS:
        raise ValueError(f"format {file_format!r} is not one of {', '.join(FORMATS)}")
    try:
        folder, base, counter, subfolder = services.paths.save_path(
            filename_prefix, "output", int(images.shape[2]), int(images.shape[1]))
    except PathError as exc:
        raise ValueError(f"filename_prefix {filename_prefix!r} cannot be used: {exc}; it must name a file "
                         "inside the output folder") from None
    metadata = embedded_metadata(prompt, extra_pnginfo, getattr(services, "settings", None))
    animated = file_format == "avif" and (options.get("save_mode") or {}).get("save_mode") == "animated"
    groups = [images] if animated else [images[i:i + 1] for i in range(images.shape[0])]
    results: List[dict] = []
    for index, group in enumerate(groups):
        name = f"{base.replace('%batch_num%', str(index))}_{counter + index:05}.{file_format}"
        path = os.path.join(folder, name)
        if file_format == "avif":
            _avif(path, _pixels(group), options, metadata, animated)
        elif file_format == "exr":
            _exr(path, _pixels(group[0]), options, metadata)
        else:
            _png(path, _pixels(group[0]), options.get("bit_depth", "8-bit"), metadata)
        results.append({"filename": name, "subfolder": subfolder, "type": "output"})
    ui: Dict[str, Any] = {"images": results}
    if animated and images.shape[0] > 1:
        ui["animated"] = (True,)
    return ui
