"""Middlewares: refuse cross-site requests, require the auth token when one is set, and turn every HTTP error into
a JSON body (DESIGN.md §8). A handler bug becomes a logged 500 with a JSON body; the server keeps serving."""
from __future__ import annotations

import hmac
import logging
import traceback
from typing import Optional
from urllib.parse import urlsplit

from aiohttp import web

log = logging.getLogger("tessera.api")


def _body(status: int, message: str, kind: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "details": "", "extra_info": {}},
                              "node_errors": {}}, status=status)


def origin_problem(request: web.Request) -> Optional[str]:
    """Why this request looks cross-site, or None. Browsers send Origin on cross-origin requests and on
    websocket handshakes; a mismatch with Host (or `Origin: null`) means another site is driving the browser."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return "cross-site request refused"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin == "null":
        return "requests with Origin: null are refused"
    parts = urlsplit(origin)
    if not parts.netloc:
        return f"malformed Origin {origin!r}"
    host = request.headers.get("Host", "")
    if parts.netloc.lower() != host.lower():
        return f"origin {origin} does not match host {host}"
    return None


def make_middlewares(auth_token: Optional[str], allow_origins: tuple = ()) -> list:
    @web.middleware
    async def json_errors(request: web.Request, handler):
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            kinds = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                     415: "unsupported_media_type", 403: "forbidden", 401: "unauthorized"}
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            if exc.status == 413:
                message = f"request body too large ({exc.text})"
            response = _body(exc.status, message, kinds.get(exc.status, "bad_request"))
            for key in ("Allow",):
                if key in exc.headers:
                    response.headers[key] = exc.headers[key]
            return response
        except Exception:
            log.error("error handling %s %s:\n%s", request.method, request.path, traceback.format_exc())
            return _body(500, "internal server error (see the server log)", "internal_error")

    @web.middleware
    async def same_origin(request: web.Request, handler):
        problem = origin_problem(request)
        if problem and request.headers.get("Origin") not in allow_origins:
            return _body(403, problem, "forbidden")
        return await handler(request)

    @web.middleware
    async def require_token(request: web.Request, handler):
        supplied = request.query.get("token")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            supplied = header[7:]
        if supplied is None or not hmac.compare_digest(supplied.encode(), auth_token.encode()):
            return _body(401, "authentication required: send 'Authorization: Bearer <token>' or ?token=",
                         "unauthorized")
        return await handler(request)

    middlewares = [json_errors, same_origin]
    if auth_token:
        middlewares.append(require_token)
    return middlewares

