"""Queue routes: /prompt, /queue, /history, /jobs, /interrupt, /free (docs/architecture.md §4.1)."""
from __future__ import annotations

import logging
import traceback
import uuid
from typing import Any, Optional

from aiohttp import web

from api.state import error_text, json_error, read_json, state_of
from execution.job_store import DuplicatePromptId
from graph import errors
from graph.ui_format import WorkflowConversionError, is_ui_workflow, ui_to_api
from graph.validation import validate_prompt

log = logging.getLogger("tessera.api")


def _prompt_error(error: dict, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "node_errors": {}}, status=status)


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        return _prompt_error(errors.invalid_prompt("The request body must be a JSON object with a 'prompt'"))
    for handler in state.prompt_handlers:
        try:
            body = handler(body)
        except Exception:
            log.error("an on_prompt handler failed:\n%s", traceback.format_exc())
    if "prompt" not in body:
        return _prompt_error(errors.invalid_prompt("No prompt provided", "the body has no 'prompt' key"))
    prompt = body["prompt"]
    extra_data = body.get("extra_data") or {}
    if not isinstance(extra_data, dict):
        return _prompt_error(errors.invalid_prompt("extra_data must be an object"))
    extra_data = dict(extra_data)
    if is_ui_workflow(prompt):
        try:
            workflow = prompt
            prompt = ui_to_api(workflow, state.catalogue, state.services)
            extra_data.setdefault("extra_pnginfo", {}).setdefault("workflow", workflow)
        except WorkflowConversionError as exc:
            return _prompt_error(errors.invalid_prompt(f"Invalid UI-format workflow: {exc}"))
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str):
            return _prompt_error(errors.invalid_prompt("client_id must be a string"))
        extra_data["client_id"] = client_id
    prompt_id = body.get("prompt_id")
    if prompt_id is None:
        prompt_id = str(uuid.uuid4())
    elif not isinstance(prompt_id, str) or not prompt_id.strip() or len(prompt_id) > 200:
        return _prompt_error(errors.invalid_prompt("prompt_id must be a non-empty string"))
    number = body.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
        return _prompt_error(errors.invalid_prompt("number must be a number"))
    front = bool(body.get("front", False))
    targets = body.get("partial_execution_targets")

    result = validate_prompt(prompt, state.catalogue, targets, state.services)
    if not result.ok:
        return web.json_response(result.response_error(), status=400)
    try:
        number = state.store.enqueue(prompt_id, prompt, extra_data, result.outputs, number, front)
    except DuplicatePromptId as exc:
        return _prompt_error(errors.invalid_prompt(str(exc)), status=409)
    log.info("job %s queued (number %s, %d nodes)", prompt_id, number, len(prompt))
    state.broadcast_status()
    if isinstance(number, float) and number.is_integer():
        number = int(number)
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response(state_of(request).status_payload())


async def get_queue(request: web.Request) -> web.Response:
    running, pending = state_of(request).store.queue()
    return web.json_response({"queue_running": [j.item() for j in running],
                              "queue_pending": [j.item() for j in pending]})


async def _clear_or_delete(request: web.Request, clear, delete) -> web.Response:
    """The shared body of POST /queue and POST /history: `{"clear": true}` and/or `{"delete": [prompt ids]}`."""
    body = await read_json(request)
    if not isinstance(body, dict):
        return json_error(400, "expected {\"clear\": true} or {\"delete\": [prompt ids]}")
    ids = body.get("delete")
    if ids is not None and not isinstance(ids, list):
        return json_error(400, "'delete' must be a list of prompt ids")
    if body.get("clear"):
        clear()
    if ids is not None:
        delete([str(x) for x in ids])
    return web.json_response({})


async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    response = await _clear_or_delete(request, state.store.clear_pending, state.store.delete_pending)
    state.broadcast_status()
    return response


def _int_query(request: web.Request, name: str) -> Optional[int]:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=error_text(f"{name} must be an integer"), content_type="application/json")
    return number


async def get_history(request: web.Request) -> web.Response:
    max_items = _int_query(request, "max_items")
    offset = _int_query(request, "offset")
    if max_items is not None and max_items < 0:
        return json_error(400, "max_items must not be negative")
    return web.json_response(state_of(request).store.history(max_items, offset))


async def get_history_entry(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = state_of(request).store.history_entry(prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


async def post_history(request: web.Request) -> web.Response:
    state = state_of(request)
    return await _clear_or_delete(request, state.store.clear_history, state.store.delete_history)


JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


async def get_jobs(request: web.Request) -> web.Response:
    state = state_of(request)
    raw = request.query.get("status")
    statuses = None
    if raw:
        statuses = [s.strip() for s in raw.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in JOB_STATUSES]
        if unknown:
            return json_error(400, f"unknown status {unknown[0]!r}; use {', '.join(JOB_STATUSES)}")
    limit = _int_query(request, "limit")
    offset = _int_query(request, "offset") or 0
    if (limit is not None and limit < 0) or offset < 0:
        return json_error(400, "limit and offset must not be negative")
    sort_by = request.query.get("sort_by", "created_at")
    if sort_by not in ("created_at", "execution_duration", "execution_time"):
        return json_error(400, "sort_by must be created_at or execution_duration")
    sort_order = request.query.get("sort_order", "desc")
    if sort_order not in ("asc", "desc"):
        return json_error(400, "sort_order must be asc or desc")
    jobs, total = state.store.jobs(statuses, limit, offset, sort_by, sort_order == "desc")
    return web.json_response({"jobs": jobs, "pagination": {
        "offset": offset, "limit": limit, "total": total, "has_more": offset + len(jobs) < total}})


async def get_job(request: web.Request) -> web.Response:
    job = state_of(request).store.job(request.match_info["job_id"])
    if job is None:
        return json_error(404, "Job not found", "not_found")
    return web.json_response(job)


async def post_interrupt(request: web.Request) -> web.Response:
    state = state_of(request)
    body: Any = {}
    if request.can_read_body:
        body = await read_json(request, default={})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    state.worker.interrupt(str(prompt_id) if prompt_id is not None else None)
    return web.json_response({})


async def post_free(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, default={})
    if not isinstance(body, dict):
        return json_error(400, "expected {\"unload_models\": bool, \"free_memory\": bool}")
    free_memory = bool(body.get("free_memory"))
    # freeing memory drops the models too (device copies and resident files), as releasing the caches' hold on
    # them does in ComfyUI; the worker applies it between jobs, never under a running one
    state.worker.request_free(bool(body.get("unload_models")) or free_memory, free_memory)
    return web.json_response({})


ROUTES = [
    ("POST", "/prompt", post_prompt), ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue), ("POST", "/queue", post_queue),
    ("GET", "/history", get_history), ("POST", "/history", post_history),
    ("GET", "/history/{prompt_id}", get_history_entry),
    ("GET", "/jobs", get_jobs), ("GET", "/jobs/{job_id}", get_job),
    ("POST", "/interrupt", post_interrupt), ("POST", "/free", post_free),
]
