"""User routes with ComfyUI's payloads and status codes: /users, /settings, /userdata, /v2/userdata
(storage: api/user_store.py). ComfyUI's frontend keeps its workflows, settings and subgraphs here; Tessera's own
editor saves workflows here too, so both see the same files."""
from __future__ import annotations

import json
import os
import shutil
from typing import Tuple
from urllib.parse import unquote

from aiohttp import web

from api.state import read_json, state_of
from api.user_store import UnknownUser, UserStore
from model_management.paths import PathError


def store_of(request: web.Request) -> UserStore:
    return state_of(request).users


def _user(request: web.Request) -> str:
    try:
        return store_of(request).user_id(request.headers.get("comfy-user"))
    except UnknownUser as exc:
        raise web.HTTPForbidden(text=f"Unknown user: {exc.args[0]}") from None


def _flag(request: web.Request, name: str, default: str = "") -> bool:
    return request.query.get(name, default).lower() == "true"


def _user_file(request: web.Request, param: str = "file", must_exist: bool = False) -> Tuple[str, str]:
    """(user, absolute path) of the file a route names; 400 without one, 403 outside the user's folder, 404 when
    `must_exist` and it does not."""
    name = request.match_info.get(param)
    if not name:
        raise web.HTTPBadRequest(text="no file name given")
    if "%" in name:  # the frontend encodes "/" as %2F inside the segment
        name = unquote(name)
    user = _user(request)
    try:
        path = store_of(request).path(user, name)
    except PathError:
        raise web.HTTPForbidden(text="invalid file path") from None
    if must_exist and not os.path.isfile(path):
        raise web.HTTPNotFound(text="file not found")
    return user, path


# -- users ------------------------------------------------------------------------------------------------------
async def get_users(request: web.Request) -> web.Response:
    store = store_of(request)
    if store.multi_user:
        return web.json_response({"storage": "server", "users": store.users()})
    return web.json_response({"storage": "server", "migrated": os.path.isdir(store.user_root("default"))})


async def post_users(request: web.Request) -> web.Response:
    body = await read_json(request)
    store = store_of(request)
    if not store.multi_user:
        return web.json_response({"error": "this server runs single-user (start it with --multi-user)"}, status=400)
    try:
        return web.json_response(store.add_user(body.get("username") if isinstance(body, dict) else None))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)


# -- settings ---------------------------------------------------------------------------------------------------
async def get_settings(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).settings(_user(request)))


async def get_setting(request: web.Request) -> web.Response:
    return web.json_response(store_of(request).settings(_user(request)).get(request.match_info["id"]))


async def post_settings(request: web.Request) -> web.Response:
    user = _user(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object of settings")
    store_of(request).update_settings(user, body)
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    user = _user(request)
    raw = await request.read()
    try:
        value = json.loads(raw) if raw.strip() else None
    except ValueError:
        raise web.HTTPBadRequest(text="the setting's value is not valid JSON") from None
    store_of(request).update_settings(user, {request.match_info["id"]: value})
    return web.Response(status=200)


# -- userdata ---------------------------------------------------------------------------------------------------
async def list_userdata(request: web.Request) -> web.Response:
    directory = request.query.get("dir", "")
    if not directory:
        return web.Response(status=400, text="Directory not provided")
    user, store = _user(request), store_of(request)
    try:
        files = store.list_files(user, directory, recurse=_flag(request, "recurse"))
    except PathError:
        return web.Response(status=403, text="Invalid directory")
    except FileNotFoundError:
        return web.Response(status=404, text="Directory not found")
    if _flag(request, "full_info"):
        folder = store.path(user, directory)
        infos = []
        for rel in files:
            info = store.file_info(user, os.path.join(folder, rel))
            info["path"] = rel  # relative to the listed folder, as ComfyUI answers
            infos.append(info)
        return web.json_response(infos)
    if _flag(request, "split"):
        return web.json_response([[rel] + rel.split("/") for rel in files])
    return web.json_response(files)


async def list_userdata_v2(request: web.Request) -> web.Response:
    user = _user(request)
    try:
        return web.json_response(store_of(request).tree(user, unquote(request.query.get("path", ""))))
    except PathError:
        return web.Response(status=400, text="Invalid path requested")
    except FileNotFoundError:
        return web.Response(status=404, text="Requested path not found")
    except NotADirectoryError:
        return web.Response(status=400, text="Requested path is not a directory")


async def get_userdata(request: web.Request) -> web.StreamResponse:
    _, path = _user_file(request, must_exist=True)
    return web.FileResponse(path, headers={"X-Content-Type-Options": "nosniff",
                                           "Content-Security-Policy": "sandbox"})


def _answer(store: UserStore, user: str, path: str, full_info: bool) -> web.Response:
    if full_info:
        return web.json_response(store.file_info(user, path))
    return web.json_response(os.path.relpath(path, os.path.realpath(store.user_root(user))).replace(os.sep, "/"))


async def post_userdata(request: web.Request) -> web.Response:
    user, path = _user_file(request)
    if request.query.get("overwrite", "true") == "false" and os.path.exists(path):
        return web.Response(status=409, text="File already exists")
    if os.path.isdir(path):
        return web.Response(status=400, text="a folder has that name")
    body = await request.read()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
    except OSError:
        return web.Response(status=400, reason="Invalid filename. Please avoid special characters like :\\/*?\"<>|")
    return _answer(store_of(request), user, path, _flag(request, "full_info"))


async def delete_userdata(request: web.Request) -> web.Response:
    _, path = _user_file(request, must_exist=True)
    os.remove(path)
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    user, source = _user_file(request, must_exist=True)
    _, dest = _user_file(request, param="dest")
    if request.query.get("overwrite", "true") == "false" and os.path.exists(dest):
        return web.Response(status=409, text="File already exists")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(source, dest)
    return _answer(store_of(request), user, dest, _flag(request, "full_info"))


ROUTES = [
    ("GET", "/users", get_users), ("POST", "/users", post_users),
    ("GET", "/settings", get_settings), ("POST", "/settings", post_settings),
    ("GET", "/settings/{id}", get_setting), ("POST", "/settings/{id}", post_setting),
    ("GET", "/userdata", list_userdata), ("GET", "/v2/userdata", list_userdata_v2),
    ("GET", "/userdata/{file}", get_userdata), ("POST", "/userdata/{file}", post_userdata),
    ("DELETE", "/userdata/{file}", delete_userdata), ("POST", "/userdata/{file}/move/{dest}", move_userdata),
]
