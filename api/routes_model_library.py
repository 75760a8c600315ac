"""The model library the ComfyUI frontend browses: /experiment/models (model kinds and their folders),
/experiment/models/{kind} (the files, with size and times) and a file's preview image
(/experiment/models/preview/{kind}/{path_index}/{filename}): a picture next to it (`name.png`, `name.preview.jpg`,
...) or a cover image in its safetensors metadata (`ssmd_cover_images`), sent as WebP."""
from __future__ import annotations

import base64
import io
import json
import os
from typing import List, Optional

from aiohttp import web

from api.state import state_of
from model_management.file_loading import ModelFileError, read_safetensors_metadata
from model_management.paths import MODEL_EXTENSIONS, PathError, safe_join

HIDDEN_KINDS = ("configs", "custom_nodes")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


async def get_model_folders(request: web.Request) -> web.Response:
    folders = state_of(request).services.paths.folders
    return web.json_response([{"name": kind, "folders": list(folder.paths)} for kind, folder in folders.items()
                              if kind not in HIDDEN_KINDS])


def _files(root: str, index: int) -> List[dict]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in MODEL_EXTENSIONS:
                continue
            full = os.path.join(dirpath, name)
            try:
                stat = os.stat(full)
            except OSError:
                continue
            out.append({"name": os.path.relpath(full, root).replace(os.sep, "/"), "pathIndex": index,
                        "modified": stat.st_mtime, "created": stat.st_ctime, "size": stat.st_size})
    return sorted(out, key=lambda f: f["name"])


async def get_models(request: web.Request) -> web.Response:
    folder = state_of(request).services.paths.folders.get(request.match_info["folder"])
    if folder is None:
        return web.Response(status=404)
    files: List[dict] = []
    for index, root in enumerate(folder.paths):
        if os.path.isdir(root):
            files += _files(root, index)
    return web.json_response(files)


def _preview_source(path: str) -> Optional[object]:
    """A path or bytes of the preview image for the model file at `path`, or None."""
    base = os.path.splitext(path)[0]
    for stem in (base, base + ".preview"):
        for ext in IMAGE_EXTENSIONS:
            if os.path.isfile(stem + ext):
                return stem + ext
    weights = path if path.endswith(".safetensors") else base + ".safetensors"  # the frontend asks for NAME.webp
    if os.path.isfile(weights):
        try:
            covers = read_safetensors_metadata(weights).get("ssmd_cover_images")
            images = json.loads(covers) if covers else []
            if images:
                return base64.b64decode(images[0])
        except (ModelFileError, ValueError, TypeError, OSError):
            return None
    return None


async def get_model_preview(request: web.Request) -> web.Response:
    folder = state_of(request).services.paths.folders.get(request.match_info["folder"])
    try:
        index = int(request.match_info["path_index"])
    except ValueError:
        return web.Response(status=400, text="path_index must be a number")
    if folder is None or not 0 <= index < len(folder.paths):
        return web.Response(status=404)
    try:
        path = safe_join(folder.paths[index], *request.match_info["filename"].split("/"))
    except PathError:
        return web.Response(status=403)
    source = _preview_source(path)
    if source is None:
        return web.Response(status=404)
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(source if isinstance(source, str) else io.BytesIO(source)) as image:
            out = io.BytesIO()
            image.save(out, format="WEBP")
    except (UnidentifiedImageError, OSError, ValueError):
        return web.Response(status=404)
    return web.Response(body=out.getvalue(), content_type="image/webp")


ROUTES = [
    ("GET", "/experiment/models", get_model_folders), ("GET", "/experiment/models/{folder}", get_models),
    ("GET", "/experiment/models/preview/{folder}/{path_index}/{filename:.+}", get_model_preview),
]
