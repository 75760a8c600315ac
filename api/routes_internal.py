"""ComfyUI's /internal routes, which its frontend uses (served without the /api prefix, as ComfyUI serves them):
logs (text, raw entries, subscribe), model folder paths, and the files of input / output / temp; and Tessera's own
/internal/workers (the execution workers: the in-process one, or the Ray pool's with what each holds)."""
from __future__ import annotations

import os

from aiohttp import web

from api.log_buffer import terminal_size
from api.state import read_json, state_of


async def get_logs(request: web.Request) -> web.Response:
    return web.json_response("".join(e["t"] + " - " + e["m"] for e in state_of(request).logs.lines()))


async def get_raw_logs(request: web.Request) -> web.Response:
    return web.json_response({"entries": state_of(request).logs.lines(), "size": terminal_size()})


async def subscribe_logs(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("clientId"), str):
        raise web.HTTPBadRequest(text="expected {\"clientId\": ..., \"enabled\": true|false}")
    state_of(request).logs.subscribe(body["clientId"], bool(body.get("enabled")))
    return web.Response(status=200)


async def get_folder_paths(request: web.Request) -> web.Response:
    folders = state_of(request).services.paths.folders
    return web.json_response({kind: list(folder.paths) for kind, folder in folders.items()})


async def get_files(request: web.Request) -> web.Response:
    kind = request.match_info["directory_type"]
    if kind not in ("output", "input", "temp"):
        return web.json_response({"error": "Invalid directory type"}, status=400)
    directory = state_of(request).services.paths.directory_for(kind)
    entries = [e for e in os.scandir(directory) if e.is_file()] if os.path.isdir(directory) else []
    entries.sort(key=lambda e: -e.stat().st_mtime)
    return web.json_response([e.name for e in entries])


async def get_workers(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).worker.describe())


ROUTES = [
    ("GET", "/internal/logs", get_logs), ("GET", "/internal/logs/raw", get_raw_logs),
    ("PATCH", "/internal/logs/subscribe", subscribe_logs), ("GET", "/internal/folder_paths", get_folder_paths),
    ("GET", "/internal/files/{directory_type}", get_files), ("GET", "/internal/workers", get_workers),
]
