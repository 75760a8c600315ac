"""AVIF files for SaveImageAdvanced: AV1 stills or an animated sequence, with the workflow in an Exif item.

Encoding is SVT-AV1 through PyAV (the encoder and settings ComfyUI's node uses: constant rate factor `crf`,
preset 8, YUV 4:2:0 at 8 or 10 bits, limited range), with the colour signalled as the input says: sRGB
(BT.709 primaries and matrix, sRGB transfer), HDR (BT.2020, HLG) or HDR PQ (BT.2020, PQ). Alpha is not supported
by that encoder, so an RGBA image is refused by name.

The workflow travels the way ComfyUI's frontend reads it back: an `Exif` item describing the primary image
(ISO/IEC 23008-12: an `infe` entry, an `iloc` extent, a `cdsc` reference), whose IFD0 holds `prompt:<json>` in
tag 0x0110 and every other key as `key:<json>` in tags 0x010F, 0x010E, ... The Exif bytes are appended to the
`mdat` box; the `meta` box grows, so every file offset after it (item extents, and the sample tables of an
animated file's `moov`) moves by the same amount. An animation keeps its `avis` major brand (ComfyUI's node
rewrites it to `avif` so that its frontend's reader finds the workflow, which makes libavif-based viewers show
the first frame only; here the animation wins).
"""
from __future__ import annotations

import json
import os
import struct
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

import numpy as np

COLOR_SPACES = ("sRGB", "HDR", "HDR PQ")
BIT_DEPTHS = ("auto", "8-bit YUV420", "10-bit YUV420")
CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}  # boxes that hold the chunk-offset tables


def _colour(color_space: str) -> Tuple[int, int, int]:
    """(primaries, transfer, matrix) as FFmpeg's enumerations for the chosen input colour space."""
    from av.video.reformatter import ColorPrimaries, ColorTrc, Colorspace
    if color_space == "sRGB":
        return ColorPrimaries.BT709, ColorTrc.IEC61966_2_1, Colorspace.ITU709
    if color_space == "HDR":
        return ColorPrimaries.BT2020, ColorTrc.ARIB_STD_B67, Colorspace.BT2020
    if color_space == "HDR PQ":
        return ColorPrimaries.BT2020, ColorTrc.SMPTE2084, Colorspace.BT2020
    raise ValueError(f"input_color_space {color_space!r} is not one of {', '.join(COLOR_SPACES)}")


def _frame(image: np.ndarray, ten_bit: bool, pixel_format: str, color_space: str):
    import av
    from av.video.reformatter import ColorRange
    if image.ndim == 2:
        image = image[..., None]
    channels = image.shape[-1]
    values = np.nan_to_num(image.astype(np.float32), nan=0.0)
    if ten_bit:
        array, source = np.clip(values * 65535.0, 0, 65535).astype(np.uint16), ("gray16le", "rgb48le")
    else:
        array, source = np.clip(values * 255.0, 0, 255).astype(np.uint8), ("gray", "rgb24")
    array = np.ascontiguousarray(array[..., 0] if channels == 1 else array)
    primaries, transfer, matrix = _colour(color_space)
    frame = av.VideoFrame.from_ndarray(array, format=source[0] if channels == 1 else source[1])
    frame = frame.reformat(format=pixel_format, dst_colorspace=matrix, dst_color_range=ColorRange.MPEG)
    frame.color_primaries, frame.color_trc, frame.colorspace = primaries, transfer, matrix
    frame.color_range = ColorRange.MPEG
    return frame


def write_avif(path: str, images: np.ndarray, bit_depth: str = "auto", color_space: str = "sRGB", crf: int = 18,
               fps: float = 1.0, loop_count: Optional[int] = None) -> None:
    """[N, H, W, C] images in 0..1 as one AVIF: a still for N = 1 unless `loop_count` is given (an animation)."""
    import av
    from av.video.reformatter import ColorRange
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth {bit_depth!r} is not one of {', '.join(BIT_DEPTHS)}")
    channels = images.shape[-1] if images.ndim == 4 else 1
    if channels not in (1, 3):
        raise ValueError(f"AVIF is written from greyscale or RGB images; this one has {channels} channels "
                         "(the AV1 encoder has no alpha: save RGBA images as PNG or EXR)")
    _colour(color_space)  # refuses an unknown colour space before a file is created
    if bit_depth == "auto":
        bit_depth = "8-bit YUV420" if color_space == "sRGB" else "10-bit YUV420"
    ten_bit = bit_depth == "10-bit YUV420"
    pixel_format = "yuv420p10le" if ten_bit else "yuv420p"
    os.environ.setdefault("SVT_LOG", "1")  # the encoder's banner on stderr only for errors
    options = {"loop": str(loop_count)} if loop_count is not None else {}
    primaries, transfer, matrix = _colour(color_space)
    with av.open(path, mode="w", format="avif", options=options) as container:
        stream = container.add_stream("libsvtav1", rate=Fraction(round(fps * 1000), 1000))
        stream.height, stream.width = int(images.shape[1]), int(images.shape[2])
        stream.pix_fmt = pixel_format
        stream.options = {"crf": str(int(crf)), "preset": "8"}
        codec = stream.codec_context
        codec.color_primaries, codec.color_trc, codec.colorspace = primaries, transfer, matrix
        codec.color_range = ColorRange.MPEG
        for image in images:
            for packet in stream.encode(_frame(image, ten_bit, pixel_format, color_space)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


# -- the Exif item -------------------------------------------------------------------------------------------------

def exif_payload(metadata: Dict[str, object]) -> bytes:
    """The Exif item's bytes: a 4-byte offset to the TIFF header (0), then a TIFF IFD0 of `key:<json>` strings."""
    from PIL import Image
    exif = Image.Exif()
    if "prompt" in metadata:
        exif[0x0110] = "prompt:" + json.dumps(metadata["prompt"])
    tag = 0x010F
    for key, value in metadata.items():
        if key != "prompt":
            exif[tag] = f"{key}:{json.dumps(value)}"
            tag -= 1
    tiff = exif.tobytes()
    if tiff.startswith(b"Exif\x00\x00"):
        tiff = tiff[6:]
    return b"\x00\x00\x00\x00" + tiff


def _boxes(data: bytes, start: int, end: int) -> List[Tuple[bytes, int, int, int]]:
    """(type, offset, header size, total size) of the boxes between start and end."""
    found, position = [], start
    while position < end:
        size, kind = struct.unpack_from(">I4s", data, position)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif size == 0:
            size = end - position
        if size < header or position + size > end:
            raise ValueError(f"malformed AVIF: box {kind!r} at {position} overruns its parent")
        found.append((kind, position, header, size))
        position += size
    return found


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _uint(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at:at + size], "big") if size else 0


class _ItemLocations:
    """An `iloc` box, parsed field by field (versions 0 to 2) so extents can move and one can be added."""

    def __init__(self, box: bytes):
        self.version = box[8]
        self.flags = box[9:12]
        self.offset_size, self.length_size = box[12] >> 4, box[12] & 15
        self.base_size, self.index_size = box[13] >> 4, (box[13] & 15 if self.version in (1, 2) else 0)
        id_size = 4 if self.version == 2 else 2
        at = 14
        count = _uint(box, at, 4 if self.version == 2 else 2)
        at += 4 if self.version == 2 else 2
        self.items = []
        for _ in range(count):
            item = {"id": _uint(box, at, id_size)}
            at += id_size
            if self.version in (1, 2):
                item["method"] = _uint(box, at, 2) & 15
                at += 2
            item["ref"] = _uint(box, at, 2)
            at += 2
            item["base"] = _uint(box, at, self.base_size)
            at += self.base_size
            extents, extent_count = [], _uint(box, at, 2)
            at += 2
            for _ in range(extent_count):
                index = _uint(box, at, self.index_size)
                at += self.index_size
                offset = _uint(box, at, self.offset_size)
                at += self.offset_size
                length = _uint(box, at, self.length_size)
                at += self.length_size
                extents.append([index, offset, length])
            item["extents"] = extents
            self.items.append(item)

    def shift(self, delta: int) -> None:
        """File-offset extents (construction method 0) move with the bytes inserted before them."""
        for item in self.items:
            if item.get("method", 0) == 0:
                if item["base"]:
                    item["base"] += delta
                else:
                    for extent in item["extents"]:
                        extent[1] += delta

    def serialise(self) -> bytes:
        def put(value: int, size: int) -> bytes:
            return value.to_bytes(size, "big") if size else b""
        id_size = 4 if self.version == 2 else 2
        body = bytes([self.version]) + self.flags
        body += bytes([(self.offset_size << 4) | self.length_size, (self.base_size << 4) | self.index_size])
        body += put(len(self.items), id_size)
        for item in self.items:
            body += put(item["id"], id_size)
            if self.version in (1, 2):
                body += put(item.get("method", 0), 2)
            body += put(item["ref"], 2) + put(item["base"], self.base_size) + put(len(item["extents"]), 2)
            for index, offset, length in item["extents"]:
                body += put(index, self.index_size) + put(offset, self.offset_size) + put(length, self.length_size)
        return _box(b"iloc", body)


def _with_exif_entry(meta: bytes, offset: int, length: int, delta: int) -> bytes:
    """The `meta` box with an Exif item (at `offset`, `length` bytes) describing the primary item; every other
    extent moved by `delta`."""
    children = {kind: (start, header, size) for kind, start, header, size in _boxes(meta, 12, len(meta))}
    for needed in (b"pitm", b"iloc", b"iinf"):
        if needed not in children:
            raise ValueError(f"AVIF meta box has no {needed.decode()} box")
    start, header, size = children[b"pitm"]
    primary = _uint(meta, start + header + 4, 4 if meta[start + header] else 2)
    start, header, size = children[b"iloc"]
    locations = _ItemLocations(meta[start:start + size])
    locations.shift(delta)
    exif_id = max(item["id"] for item in locations.items) + 1
    if locations.offset_size < 4 or locations.length_size < 4 or exif_id > 0xFFFF:
        raise ValueError("AVIF item locations too narrow for the Exif item")
    locations.items.append({"id": exif_id, "method": 0, "ref": 0, "base": 0, "extents": [[0, offset, length]]})
    start, header, size = children[b"iinf"]
    info = meta[start + header:start + size]
    wide = info[0] != 0
    count = _uint(info, 4, 4 if wide else 2) + 1
    entry = _box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH4s", exif_id, 0, b"Exif") + b"\x00")
    info = info[:4] + count.to_bytes(4 if wide else 2, "big") + info[(8 if wide else 6):] + entry
    reference = _box(b"cdsc", struct.pack(">HHH", exif_id, 1, primary))
    if b"iref" in children:
        start, header, size = children[b"iref"]
        if meta[start + header] != 0:
            raise ValueError("AVIF iref box with 32-bit item ids is not supported")
        references = _box(b"iref", meta[start + header:start + size] + reference)
    else:
        references = _box(b"iref", b"\x00\x00\x00\x00" + reference)
    out = [meta[8:12]]
    for kind, start, header, size in _boxes(meta, 12, len(meta)):
        if kind == b"iloc":
            out.append(locations.serialise())
        elif kind == b"iinf":
            out.append(_box(b"iinf", info))
            if b"iref" not in children:
                out.append(references)
        elif kind == b"iref":
            out.append(references)
        else:
            out.append(meta[start:start + size])
    return _box(b"meta", b"".join(out))


def _shift_chunk_offsets(data: bytearray, start: int, end: int, delta: int) -> None:
    for kind, position, header, size in _boxes(bytes(data), start, end):
        if kind in CONTAINERS:
            _shift_chunk_offsets(data, position + header, position + size, delta)
        elif kind in (b"stco", b"co64"):
            width = 4 if kind == b"stco" else 8
            count = struct.unpack_from(">I", data, position + header + 4)[0]
            at = position + header + 8
            for _ in range(count):
                value = int.from_bytes(data[at:at + width], "big") + delta
                data[at:at + width] = value.to_bytes(width, "big")
                at += width


def add_exif(data: bytes, metadata: Dict[str, object]) -> bytes:
    """The same AVIF file with the metadata as an Exif item of its primary image."""
    exif = exif_payload(metadata)
    boxes = _boxes(data, 0, len(data))
    kinds = [kind for kind, *_ in boxes]
    if b"meta" not in kinds or kinds[-1] != b"mdat" or kinds.index(b"meta") > kinds.index(b"mdat"):
        raise ValueError("AVIF layout not understood (expected ftyp, meta, ..., mdat last)")
    _, meta_at, _, meta_size = boxes[kinds.index(b"meta")]
    meta = data[meta_at:meta_at + meta_size]
    delta = len(_with_exif_entry(meta, 0, len(exif), 0)) - meta_size
    new_meta = _with_exif_entry(meta, len(data) + delta, len(exif), delta)
    out = bytearray()
    for kind, position, header, size in boxes:
        box = bytearray(data[position:position + size])
        if kind == b"meta":
            box = bytearray(new_meta)
        elif kind == b"moov":
            _shift_chunk_offsets(box, 8, len(box), delta)
        elif kind == b"mdat":
            if header == 16:
                box[8:16] = (size + len(exif)).to_bytes(8, "big")
            elif struct.unpack_from(">I", box, 0)[0] != 0:
                box[0:4] = (size + len(exif)).to_bytes(4, "big")
            box += exif
        out += box
    return bytes(out)
