"""Read-only information routes: /object_info, /system_stats, /features, /embeddings, /models, /extensions,
/view_metadata (docs/architecture.md §4.1)."""
from __future__ import annotations

import json
import os
import platform
import re
import sys

from aiohttp import web

from api.security import redacted_argv
from api.state import json_error, state_of
from execution.tracebacks import client_traceback_lines, shown_path
from model_management import host_memory
from model_management.file_loading import ModelFileError, read_safetensors_metadata
from model_management.paths import PathError

VERSION = "0.1.0"
WORKFLOWS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "workflows")
_EXAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")


async def object_info(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response(state.catalogue.object_info(state.services))


async def object_info_one(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info["node_class"]
    info = state.catalogue.object_info(state.services, only=name)
    if not info and name in state.catalogue.describe_errors:
        return json_error(404, f"node class {name!r} is left out: {state.catalogue.describe_errors[name]}",
                          "not_found")
    if not info:
        return json_error(404, f"unknown node class {name!r}", "not_found")
    return web.json_response(info)


def _memory() -> tuple:
    return host_memory.total_bytes(), host_memory.available_bytes()


def _devices(services) -> list:
    """The compute device the models run on (with its VRAM figures), as the device loader sees it."""
    import torch
    loader = getattr(getattr(services, "models", None), "devices", None)
    compute = getattr(loader, "compute", None)
    precision = compute.precision.describe() if compute is not None else None
    if compute is not None and compute.active:
        device = compute.device
        total, free = compute.total_bytes(), compute.raw_free_bytes(loader.held_bytes())
        torch_total, torch_free = total, free
        if device.type == "cuda":  # what torch's caching allocator holds, and of that what is unused
            torch_total = torch.cuda.memory_reserved(device)
            torch_free = torch_total - torch.cuda.memory_allocated(device)
        return [{"name": compute.name, "type": device.type, "index": device.index, "vram_total": total,
                 "vram_free": free, "torch_vram_total": torch_total, "torch_vram_free": torch_free,
                 "vram_mode": compute.mode.value, "reserve_vram": compute.reserve_bytes,
                 "loaded_weights": loader.held_bytes(), "precision": precision}]
    devices = []
    if torch.cuda.is_available() and not (compute is not None and compute.device.type == "cpu"):
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            devices.append({"name": torch.cuda.get_device_name(index), "type": "cuda", "index": index,
                            "vram_total": total, "vram_free": free, "torch_vram_total": total,
                            "torch_vram_free": free})
    else:
        total, free = _memory()
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                        "torch_vram_total": total, "torch_vram_free": free, "precision": precision})
    return devices


async def system_stats(request: web.Request) -> web.Response:
    import torch
    state = state_of(request)
    total, free = _memory()
    failed = [{"name": p.name, "path": shown_path(p.path),
               "error": "\n".join(client_traceback_lines(p.error or ""))} for p in state.packs if not p.ok]
    return web.json_response({
        "system": {"os": sys.platform, "ram_total": total, "ram_free": free, "comfyui_version": VERSION,
                   "tessera_version": VERSION, "python_version": sys.version,
                   "pytorch_version": torch.__version__, "embedded_python": False, "argv": redacted_argv(sys.argv),
                   "platform": platform.platform()},
        "devices": _devices(state.services),
        "custom_nodes": {"loaded": [p.name for p in state.packs if p.ok], "failed": failed,
                         "nodes_left_out_of_object_info": dict(state.catalogue.describe_errors)},
    })


async def features(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response(state.hub.server_features)


async def embeddings(request: web.Request) -> web.Response:
    names = state_of(request).services.paths.list_files("embeddings")
    return web.json_response([os.path.splitext(n)[0] for n in names])


async def model_kinds(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).services.paths.kinds())


async def model_files(request: web.Request) -> web.Response:
    paths = state_of(request).services.paths
    folder = request.match_info["folder"]
    if folder not in paths.kinds():
        return json_error(404, f"unknown model folder {folder!r}", "not_found")
    return web.json_response(paths.list_files(folder))


async def extensions(request: web.Request) -> web.Response:
    state = state_of(request)
    files = []
    for pack in state.packs:
        if not pack.ok or not pack.web_directory or not os.path.isdir(pack.web_directory):
            continue
        for dirpath, _, names in os.walk(pack.web_directory):
            for name in sorted(names):
                if name.endswith(".js"):
                    rel = os.path.relpath(os.path.join(dirpath, name), pack.web_directory).replace(os.sep, "/")
                    files.append(f"/extensions/{pack.name}/{rel}")
    return web.json_response(sorted(files))


async def view_metadata(request: web.Request) -> web.Response:
    paths = state_of(request).services.paths
    folder = request.match_info["folder"]
    filename = request.query.get("filename", "")
    if folder not in paths.kinds():
        return json_error(404, f"unknown model folder {folder!r}", "not_found")
    if not filename.endswith(".safetensors"):
        return json_error(400, "metadata is only available for .safetensors files")
    try:
        path = paths.full_path(folder, filename)
    except PathError:
        path = None
    if path is None:
        return json_error(404, f"{filename!r} not found in {folder}", "not_found")
    try:
        return web.json_response(read_safetensors_metadata(path))
    except ModelFileError as exc:
        return json_error(400, f"cannot read metadata of {filename!r}: {exc}")


def _example_files() -> dict:
    """Example name -> its file in workflows/: the UI-format NAME.json when there is one, else NAME.api.json."""
    found: dict = {}
    try:
        names = sorted(os.listdir(WORKFLOWS_DIR))
    except OSError:
        return found
    for filename in names:
        if filename.endswith(".api.json"):
            found.setdefault(filename[:-len(".api.json")], filename)
        elif filename.endswith(".json"):
            found[filename[:-len(".json")]] = filename  # the UI file wins over the API one
    return {name: f for name, f in found.items() if _EXAMPLE_NAME.match(name)}


async def workflow_examples(request: web.Request) -> web.Response:
    """The names of the example workflows shipped in workflows/ (the editor's examples menu)."""
    return web.json_response(sorted(_example_files()))


async def workflow_example(request: web.Request) -> web.Response:
    """One example workflow by name, as stored (UI format when the example has one). Names are plain words: no
    separators or dots, so a request can never reach a file outside workflows/."""
    name = request.match_info["name"]
    if name.endswith(".json"):
        name = name[:-len(".json")]
    if not _EXAMPLE_NAME.match(name):
        return json_error(400, f"invalid example name {name!r}: use letters, digits, '_' and '-' only")
    filename = _example_files().get(name)
    if filename is None:
        return json_error(404, f"no example workflow named {name!r}", "not_found")
    path = os.path.realpath(os.path.join(WORKFLOWS_DIR, filename))
    if os.path.dirname(path) != os.path.realpath(WORKFLOWS_DIR):
        return json_error(404, f"no example workflow named {name!r}", "not_found")
    try:
        with open(path, encoding="utf-8") as f:
            return web.json_response(json.load(f))
    except (OSError, ValueError) as exc:
        return json_error(500, f"example {name!r} cannot be read: {exc}", "internal_error")


ROUTES = [
    ("GET", "/object_info", object_info), ("GET", "/object_info/{node_class}", object_info_one),
    ("GET", "/system_stats", system_stats), ("GET", "/features", features),
    ("GET", "/embeddings", embeddings), ("GET", "/models", model_kinds), ("GET", "/models/{folder}", model_files),
    ("GET", "/extensions", extensions), ("GET", "/view_metadata/{folder}", view_metadata),
    ("GET", "/workflow_examples", workflow_examples), ("GET", "/workflow_examples/{name}", workflow_example),
]
