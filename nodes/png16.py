"""16-bit PNG files, which Pillow cannot write for colour images: the format's own structure (signature, IHDR,
tEXt, IDAT of zlib-compressed filtered rows, IEND; ISO/IEC 15948), big-endian samples, filter 0 on every row.
"""
from __future__ import annotations

import struct
import zlib
from typing import Dict

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png16(pixels: np.ndarray, texts: Dict[str, str], compress_level: int = 4) -> bytes:
    """[H, W, C] (or [H, W]) uint16 samples as a PNG; `texts` become tEXt chunks (Latin-1, as PNG requires)."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    if channels not in COLOR_TYPES:
        raise ValueError(f"cannot save an image with {channels} channels as PNG (1 to 4)")
    header = struct.pack(">IIBBBBB", width, height, 16, COLOR_TYPES[channels], 0, 0, 0)
    rows = np.ascontiguousarray(pixels.astype(">u2")).view(np.uint8).reshape(height, width * channels * 2)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()
    out = [SIGNATURE, _chunk(b"IHDR", header)]
    for key, value in texts.items():
        out.append(_chunk(b"tEXt", key.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    out.append(_chunk(b"IDAT", zlib.compress(raw, compress_level)))
    out.append(_chunk(b"IEND", b""))
    return b"".join(out)
