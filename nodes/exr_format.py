"""OpenEXR files for SaveImageAdvanced: 32-bit float, scene-linear, with the workflow in the header.

The pixels are encoded by FFmpeg's EXR encoder through PyAV (uncompressed scanlines, channels R G B [A] or Y), the
encoder ComfyUI's node uses, so a file differs only where the header does. EXR stores linear light by convention,
so display-encoded input is linearised first: sRGB by the inverse of the sRGB transfer curve (IEC 61966-2-1), HLG
by BT.2100's inverse OETF. Alpha is never transformed. The header then gains one `string` attribute per metadata
key (`prompt`, `workflow`, ...; JSON text, as the PNG tEXt chunks hold) and a `chromaticities` attribute naming the
primaries (Rec.709 for sRGB and linear input, Rec.2020 for HLG). Inserting bytes into the header moves every
pixel chunk, so the chunk offset table (absolute file offsets) is shifted by the same amount.
"""
from __future__ import annotations

import json
import struct
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

import numpy as np

MAGIC = b"\x76\x2f\x31\x01"
LONG_NAMES = 0x400  # version-field flag: attribute names up to 255 bytes instead of 31
SCANLINES_PER_CHUNK = {0: 1, 1: 1, 2: 1, 3: 16, 4: 32, 5: 16, 6: 32, 7: 32, 8: 32, 9: 256}  # by compression
COLOR_SPACES = ("sRGB", "HDR", "linear")
# CIE 1931 xy of red, green, blue and the D65 white point
CHROMATICITIES = {"Rec.709": (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290),
                  "Rec.2020": (0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290)}
HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073  # BT.2100 HLG constants


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """Inverse of the sRGB encoding: linear segment below 0.04045, the 2.4 power above."""
    values = values.astype(np.float32)
    curve = np.power((np.maximum(values, 0.04045) + 0.055) / 1.055, 2.4)
    return np.where(values <= 0.04045, values / 12.92, curve).astype(np.float32)


def hlg_to_linear(values: np.ndarray) -> np.ndarray:
    """BT.2100's inverse HLG OETF: E'^2/3 up to 1/2, (exp((E'-c)/a) + b)/12 above; scene light in 0..1."""
    values = np.clip(values.astype(np.float64), 0.0, None)
    low = values * values / 3.0
    high = (np.exp((np.maximum(values, 0.5) - HLG_C) / HLG_A) + HLG_B) / 12.0
    return np.where(values <= 0.5, low, high).astype(np.float32)


def linearise(pixels: np.ndarray, color_space: str) -> np.ndarray:
    """[H, W, C] display values as scene-linear light; a fourth (alpha) channel passes unchanged."""
    if color_space not in COLOR_SPACES:
        raise ValueError(f"input_color_space {color_space!r} is not one of {', '.join(COLOR_SPACES)}")
    if color_space == "linear":
        return pixels.astype(np.float32)
    colour, alpha = (pixels[..., :3], pixels[..., 3:]) if pixels.shape[-1] == 4 else (pixels, pixels[..., :0])
    convert = srgb_to_linear if color_space == "sRGB" else hlg_to_linear
    return np.concatenate([convert(colour), alpha.astype(np.float32)], axis=-1)


def encode_pixels(pixels: np.ndarray) -> bytes:
    """[H, W, C] float32 (C = 1, 3 or 4) as an uncompressed EXR, through FFmpeg's encoder."""
    import av
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    formats = {1: "grayf32le", 3: "gbrpf32le", 4: "gbrapf32le"}
    if channels not in formats:
        raise ValueError(f"cannot save an image with {channels} channels as EXR (1, 3 or 4)")
    array = np.ascontiguousarray(pixels[..., 0] if channels == 1 else pixels, dtype=np.float32)
    codec = av.CodecContext.create("exr", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = formats[channels]
    codec.time_base = Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(array, format=formats[channels])
    frame.pts = 0
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def _attribute(name: str, kind: str, value: bytes) -> bytes:
    return name.encode("utf-8") + b"\x00" + kind.encode("ascii") + b"\x00" + struct.pack("<i", len(value)) + value


def read_header(data: bytes) -> Tuple[List[Tuple[str, str, bytes]], int]:
    """The attributes of a single-part scanline EXR as (name, type, value), and the offset of the header's
    terminating null byte."""
    if data[:4] != MAGIC:
        raise ValueError("not an OpenEXR file")
    position, attributes = 8, []
    while data[position] != 0:
        name_end = data.index(b"\x00", position)
        type_end = data.index(b"\x00", name_end + 1)
        size = struct.unpack_from("<i", data, type_end + 1)[0]
        start = type_end + 5
        attributes.append((data[position:name_end].decode("utf-8"), data[name_end + 1:type_end].decode("ascii"),
                           data[start:start + size]))
        position = start + size
    return attributes, position


def add_attributes(data: bytes, extra: List[Tuple[str, str, bytes]]) -> bytes:
    """The same file with more header attributes; the chunk offsets move by the bytes added."""
    attributes, end = read_header(data)
    found = {name: (kind, value) for name, kind, value in attributes}
    compression = found["compression"][1][0]
    x_min, y_min, x_max, y_max = struct.unpack("<4i", found["dataWindow"][1])
    chunks = -(-(y_max - y_min + 1) // SCANLINES_PER_CHUNK[compression])
    blob = b"".join(_attribute(name, kind, value) for name, kind, value in extra if name not in found)
    version = struct.unpack_from("<I", data, 4)[0]
    if any(len(name.encode("utf-8")) > 31 for name, _, _ in extra):
        version |= LONG_NAMES
    table = end + 1
    offsets = struct.unpack_from(f"<{chunks}Q", data, table)
    shifted = struct.pack(f"<{chunks}Q", *(offset + len(blob) for offset in offsets))
    return (MAGIC + struct.pack("<I", version) + data[8:end] + blob + b"\x00" + shifted
            + data[table + 8 * chunks:])


def encode_exr(pixels: np.ndarray, color_space: str = "sRGB", metadata: Optional[Dict[str, object]] = None) -> bytes:
    """One image ([H, W, C] in the given colour space) as the EXR bytes SaveImageAdvanced writes."""
    data = encode_pixels(linearise(pixels, color_space))
    extra = [(str(key), "string", json.dumps(value).encode("utf-8")) for key, value in (metadata or {}).items()]
    primaries = CHROMATICITIES["Rec.2020" if color_space == "HDR" else "Rec.709"]
    extra.append(("chromaticities", "chromaticities", struct.pack("<8f", *primaries)))
    return add_attributes(data, extra)
