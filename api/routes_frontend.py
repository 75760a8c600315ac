"""What the ComfyUI frontend reads from packs and packages, with ComfyUI's payloads:
- /i18n: every pack's `locales/<lang>/main.json` (plus nodeDefs / commands / settings .json under those keys),
  merged per language;
- /workflow_templates: pack name -> its example workflow names (`example_workflows/`, or the older folder names),
  each served at /api/workflow_templates/<pack>/<file>;
- /global_subgraphs (and /global_subgraphs/{id}): subgraph blueprints packs ship in `subgraphs/`;
- /templates/<file>: the `comfyui-workflow-templates` packages' files, when installed (404 otherwise);
- /favicon.ico.
Only files inside those folders are ever served (names resolved with the same containment check as /view).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from aiohttp import web

from api.state import state_of
from model_management.paths import PathError, safe_join

EXAMPLE_FOLDERS = ("example_workflows", "example", "examples", "workflow", "workflows")
LOCALE_EXTRAS = ("nodeDefs", "commands", "settings")
FAVICON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web", "favicon.svg")


def _packs(request: web.Request) -> Iterator[Tuple[str, str]]:
    """(name, folder) of every loaded pack that is a folder."""
    for pack in state_of(request).packs or ():
        if pack.ok and os.path.isdir(pack.path):
            yield pack.name, pack.path


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _merge(into: Dict[str, Any], more: Dict[str, Any]) -> Dict[str, Any]:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


async def get_i18n(request: web.Request) -> web.Response:
    out: Dict[str, Any] = {}
    for _, folder in sorted(_packs(request)):
        locales = os.path.join(folder, "locales")
        if not os.path.isdir(locales):
            continue
        for lang in sorted(os.listdir(locales)):
            lang_dir = os.path.join(locales, lang)
            if not os.path.isdir(lang_dir):
                continue
            entry = _read_json(os.path.join(lang_dir, "main.json"))
            entry = entry if isinstance(entry, dict) else {}
            for extra in LOCALE_EXTRAS:
                data = _read_json(os.path.join(lang_dir, extra + ".json"))
                if data:
                    entry[extra] = data
            if entry:
                _merge(out.setdefault(lang, {}), entry)
    return web.json_response(out)


def _example_dirs(request: web.Request) -> Iterator[Tuple[str, str]]:
    for name, folder in _packs(request):
        for sub in EXAMPLE_FOLDERS:
            path = os.path.join(folder, sub)
            if os.path.isdir(path):
                yield name, path


async def get_workflow_templates(request: web.Request) -> web.Response:
    out: Dict[str, List[str]] = {}
    for name, folder in _example_dirs(request):
        names = sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".json"))
        if names:
            out.setdefault(name, []).extend(names)
    return web.json_response(out)


def _file_in(folders: List[str], name: str) -> Optional[web.FileResponse]:
    """The first folder's file of that name (403 for a name that would leave its folder), or None."""
    for folder in folders:
        try:
            path = safe_join(folder, *name.split("/"))
        except PathError:
            raise web.HTTPForbidden(text="invalid path") from None
        if os.path.isfile(path):
            return web.FileResponse(path)
    return None


async def get_workflow_template_file(request: web.Request) -> web.StreamResponse:
    pack, name = request.match_info["pack"], request.match_info["filename"]
    found = _file_in([folder for pack_name, folder in _example_dirs(request) if pack_name == pack], name)
    if found is None:
        raise web.HTTPNotFound()
    return found


def _blueprints(request: web.Request) -> Dict[str, Dict[str, Any]]:
    """id -> (entry, file) for every `subgraphs/*.json` a pack ships."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, folder in sorted(_packs(request)):
        sub = os.path.join(folder, "subgraphs")
        if not os.path.isdir(sub):
            continue
        for filename in sorted(os.listdir(sub)):
            if not filename.endswith(".json"):
                continue
            key = hashlib.sha256(f"custom_node/{name}/{filename}".encode()).hexdigest()
            out[key] = {"entry": {"source": "custom_node", "name": os.path.splitext(filename)[0],
                                  "info": {"node_pack": f"custom_nodes.{name}"}},
                        "file": os.path.join(sub, filename)}
    return out


async def get_global_subgraphs(request: web.Request) -> web.Response:
    return web.json_response({key: value["entry"] for key, value in _blueprints(request).items()})


async def get_global_subgraph(request: web.Request) -> web.Response:
    found = _blueprints(request).get(request.match_info["id"])
    if found is None:
        return web.Response(status=404)
    try:
        with open(found["file"], encoding="utf-8") as f:
            data = f.read()
    except OSError:
        return web.Response(status=404)
    return web.json_response({**found["entry"], "data": data})


def template_folders() -> List[str]:
    """The `templates/` folders of the installed comfyui-workflow-templates packages (JSON first)."""
    from importlib import resources
    names = ["comfyui_workflow_templates_json", "comfyui_workflow_templates_media_api",
             "comfyui_workflow_templates_media_image", "comfyui_workflow_templates_media_video",
             "comfyui_workflow_templates_media_other", "comfyui_workflow_templates_media_assets_01",
             "comfyui_workflow_templates_media_assets_02", "comfyui_workflow_templates"]
    out = []
    for name in names:
        try:
            folder = resources.files(name) / "templates"
        except (ModuleNotFoundError, TypeError):
            continue
        if folder.is_dir():
            out.append(str(folder))
    return out


async def get_template(request: web.Request) -> web.StreamResponse:
    found = _file_in(request.app.get(TEMPLATE_FOLDERS) or [], request.match_info["filename"])
    if found is not None:
        return found
    raise web.HTTPNotFound(text="workflow templates are not installed (pip install comfyui-workflow-templates)"
                           if not request.app.get(TEMPLATE_FOLDERS) else "no such template file")


async def get_favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(FAVICON, headers={"Content-Type": "image/svg+xml"})


TEMPLATE_FOLDERS = web.AppKey("tessera_template_folders", list)

ROUTES = [
    ("GET", "/i18n", get_i18n), ("GET", "/workflow_templates", get_workflow_templates),
    ("GET", "/workflow_templates/{pack}/{filename:.+}", get_workflow_template_file),
    ("GET", "/global_subgraphs", get_global_subgraphs), ("GET", "/global_subgraphs/{id}", get_global_subgraph),
]
# served as they are, without the /api prefix (static-like paths)
PLAIN_ROUTES = [("GET", "/templates/{filename:.+}", get_template), ("GET", "/favicon.ico", get_favicon)]
