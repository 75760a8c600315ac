"""File routes: /view and /upload/image, /upload/mask (docs/architecture.md §4.1, §8).

Every name from a request goes through `safe_join` (realpath, symlinks followed) and must stay inside output/,
input/ or temp/. Files are served as images or downloads, never as active content (no HTML/JS/SVG rendering).
Uploads are bounded by the app's client_max_size; an existing name is reused for identical bytes and otherwise
de-duplicated ("name (1).png") unless overwrite is asked for.
"""
from __future__ import annotations

import hashlib
import io
import mimetypes
import os

from aiohttp import web
from PIL import Image, ImageOps

from api.state import json_error, state_of
from model_management.paths import PathError, safe_join

SAFE_INLINE = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/avif", "video/mp4",
               "video/webm", "audio/mpeg", "audio/wav", "audio/flac", "audio/ogg", "application/json",
               "text/plain"}
UPLOAD_TYPES = ("input", "temp", "output")


def _folder(paths, folder_type: str) -> str:
    try:
        return paths.directory_for(folder_type)
    except PathError as exc:
        raise web.HTTPBadRequest(text=str(exc))


async def view(request: web.Request) -> web.StreamResponse:
    paths = state_of(request).services.paths
    filename = request.query.get("filename")
    if not filename:
        return json_error(400, "filename is required")
    folder_type = request.query.get("type", "output")
    if folder_type not in ("output", "input", "temp"):
        return json_error(400, f"unknown type {folder_type!r} (output, input or temp)")
    subfolder = request.query.get("subfolder", "")
    if "\x00" in filename or "\x00" in subfolder:
        return json_error(400, "invalid file name")
    try:
        path = safe_join(paths.directory_for(folder_type), subfolder, filename)
    except PathError as exc:
        return json_error(403, str(exc), "forbidden")
    if not os.path.isfile(path):
        return json_error(404, f"{filename!r} not found", "not_found")
    preview = request.query.get("preview")
    channel = request.query.get("channel")
    if preview or channel:
        try:
            return _converted(path, preview, channel)
        except (OSError, ValueError) as exc:
            return json_error(400, f"cannot convert {filename!r}: {exc}")
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"}
    if mime not in SAFE_INLINE:
        headers["Content-Disposition"] = f'attachment; filename="{os.path.basename(path)}"'
        mime = "application/octet-stream"
    else:
        headers["Content-Disposition"] = f'inline; filename="{os.path.basename(path)}"'
    return web.FileResponse(path, headers={**headers, "Content-Type": mime})


def _converted(path: str, preview: str, channel: str) -> web.Response:
    with Image.open(path) as img:
        img.load()
        if channel == "a":
            alpha = img.getchannel("A") if "A" in img.getbands() else Image.new("L", img.size, 255)
            img = alpha
        elif channel == "rgb":
            img = img.convert("RGB")
        elif channel not in (None, "", "rgba"):
            raise ValueError(f"unknown channel {channel!r} (rgb, a or rgba)")
        fmt, quality = "PNG", 90
        if preview:
            parts = preview.split(";")
            fmt = {"webp": "WEBP", "jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}.get(parts[0].lower())
            if fmt is None:
                raise ValueError(f"unknown preview format {parts[0]!r}")
            if len(parts) > 1:
                quality = max(1, min(100, int(parts[1])))
        if fmt == "JPEG" and img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, quality=quality)
    return web.Response(body=buffer.getvalue(), content_type=f"image/{fmt.lower()}",
                        headers={"X-Content-Type-Options": "nosniff"})


def _unique_name(folder: str, name: str, data: bytes, overwrite: bool) -> str:
    """The name to write: the same name when overwriting or when identical bytes are already there."""
    target = os.path.join(folder, name)
    if overwrite or not os.path.exists(target):
        return name
    base, ext = os.path.splitext(name)
    digest = hashlib.sha256(data).digest()
    counter = 0
    while True:
        candidate = name if counter == 0 else f"{base} ({counter}){ext}"
        existing = os.path.join(folder, candidate)
        if not os.path.exists(existing):
            return candidate
        with open(existing, "rb") as f:
            if hashlib.sha256(f.read()).digest() == digest:
                return candidate
        counter += 1


async def _read_upload(request: web.Request) -> dict:
    if not request.content_type.startswith("multipart/"):
        raise web.HTTPUnsupportedMediaType(text="uploads must be multipart/form-data with an 'image' file")
    limit = request.app._client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    fields: dict = {}
    total = 0
    try:
        reader = await request.multipart()
        async for part in reader:
            data = bytearray()
            while True:
                chunk = await part.read_chunk(1 << 16)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:  # multipart bodies are streamed: the app-wide limit does not apply by itself
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
                data.extend(chunk)
            if part.name == "image":
                fields["filename"] = part.filename
                fields["image"] = bytes(data)
            elif part.name:
                fields[part.name] = bytes(data).decode("utf-8", "replace")
    except (ValueError, AssertionError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"malformed multipart body: {exc}")
    return fields


async def _store_upload(request: web.Request, fields: dict, data: bytes) -> web.Response:
    paths = state_of(request).services.paths
    folder_type = fields.get("type") or "input"
    if folder_type not in UPLOAD_TYPES:
        return json_error(400, f"unknown upload type {folder_type!r} (input, temp or output)")
    name = os.path.basename((fields.get("filename") or "").replace("\\", "/"))
    if not name or name in (".", "..") or "\x00" in name:
        return json_error(400, "the uploaded file has no usable name")
    subfolder = fields.get("subfolder", "") or ""
    try:
        folder = safe_join(paths.directory_for(folder_type), subfolder)
    except PathError as exc:
        return json_error(403, str(exc), "forbidden")
    os.makedirs(folder, exist_ok=True)
    overwrite = str(fields.get("overwrite", "")).lower() in ("true", "1")
    name = _unique_name(folder, name, data, overwrite)
    target = os.path.join(folder, name)
    if os.path.islink(target):
        return json_error(403, "refusing to write through a symbolic link", "forbidden")
    with open(target, "wb") as f:
        f.write(data)
    return web.json_response({"name": name, "subfolder": subfolder, "type": folder_type})


async def upload_image(request: web.Request) -> web.Response:
    fields = await _read_upload(request)
    if "image" not in fields:
        return json_error(400, "the multipart body has no 'image' file")
    return await _store_upload(request, fields, fields["image"])


async def upload_mask(request: web.Request) -> web.Response:
    """A mask painted in the editor: its alpha is applied to the original image (`original_ref`)."""
    import json
    fields = await _read_upload(request)
    if "image" not in fields:
        return json_error(400, "the multipart body has no 'image' file")
    try:
        ref = json.loads(fields.get("original_ref") or "")
        if not isinstance(ref, dict) or not ref.get("filename"):
            raise ValueError("original_ref needs a filename")
    except ValueError as exc:
        return json_error(400, f"original_ref must be JSON {{filename, subfolder, type}}: {exc}")
    paths = state_of(request).services.paths
    try:
        original = safe_join(paths.directory_for(ref.get("type") or "input"), ref.get("subfolder") or "",
                             ref["filename"])
    except PathError as exc:
        return json_error(403, str(exc), "forbidden")
    if not os.path.isfile(original):
        return json_error(404, f"original image {ref['filename']!r} not found", "not_found")
    try:
        with Image.open(original) as base_img, Image.open(io.BytesIO(fields["image"])) as mask_img:
            base = ImageOps.exif_transpose(base_img).convert("RGBA")
            alpha = mask_img.getchannel("A") if "A" in mask_img.getbands() else mask_img.convert("L")
            base.putalpha(alpha.resize(base.size))
            buffer = io.BytesIO()
            base.save(buffer, format="PNG")
    except (OSError, ValueError) as exc:
        return json_error(400, f"cannot apply the mask: {exc}")
    return await _store_upload(request, fields, buffer.getvalue())


ROUTES = [("GET", "/view", view), ("POST", "/upload/image", upload_image), ("POST", "/upload/mask", upload_mask)]
