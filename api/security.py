"""Middlewares: refuse cross-site requests, require the auth token when one is set, and turn every HTTP error into
a JSON body (docs/architecture.md §8). A handler bug becomes a logged 500 with a JSON body; the server keeps serving."""
from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import logging
import traceback
from typing import List, Optional, Sequence
from urllib.parse import quote, urlsplit

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


SECRET_FLAGS = ("--auth-token",)
_SECRET_WORDS = ("token", "secret", "password", "passwd", "api-key", "apikey", "api_key")
REDACTED = "<redacted>"


def redacted_argv(argv: Sequence[str]) -> List[str]:
    """The command line with the value of every secret-bearing flag (--auth-token, and any flag whose name says
    token, secret, password or api key) replaced: what /system_stats and logs may show."""
    out: List[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, equals, _ = arg.partition("=")
        secret = name.startswith("--") and (name in SECRET_FLAGS or any(w in name.lower() for w in _SECRET_WORDS))
        if secret and equals:
            out.append(f"{name}={REDACTED}")
        else:
            out.append(arg)
            hide_next = secret
    return out


SESSION_COOKIE = "tessera_session"
LOGIN_PATHS = ("/login", "/api/login")

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tessera - sign in</title>
<style>body{{font-family:system-ui,sans-serif;background:#1e1f22;color:#ddd;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#2b2d31;padding:2em;border-radius:8px;min-width:18em}}
input{{width:100%;box-sizing:border-box;padding:.5em;margin:.6em 0;background:#1e1f22;color:#eee;
border:1px solid #555;border-radius:4px}}button{{padding:.5em 1.2em}}.error{{color:#f77}}</style></head>
<body><form method="post" action="/login">
<h2>Tessera</h2><p>This server needs its access token.</p>
<p class="error">{error}</p>
<input type="hidden" name="next" value="{next}">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus required></label>
<button type="submit">Sign in</button></form></body></html>"""


def _safe_next(target: str) -> str:
    """Only a path on this server may be the page to return to after signing in."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class TokenGate:
    """Requires the access token on every request except the sign-in page. Accepted: `Authorization: Bearer`,
    `?token=`, or the session cookie that signing in sets (HttpOnly, SameSite=Strict), so the browser editor and
    its websocket work without the token ever reaching page scripts. The cookie holds an HMAC of the token under a
    key made at start, not the token itself, and stops working when the server restarts."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._session = hmac.new(secrets.token_bytes(32), self._token, hashlib.sha256).hexdigest()

    def _token_ok(self, supplied: Optional[str]) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self._token)

    def authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer ") and self._token_ok(header[7:]):
            return True
        if self._token_ok(request.query.get("token")):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.path in LOGIN_PATHS:
            return await self.login(request)
        if self.authorised(request):
            return await handler(request)
        wants_page = request.method == "GET" and "text/html" in request.headers.get("Accept", "")
        if wants_page:
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        return _body(401, "authentication required: send 'Authorization: Bearer <token>', ?token=, or sign in at "
                          "/login", "unauthorized")

    async def login(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return self._page(_safe_next(request.query.get("next", "/")), "", 200)
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        if request.content_type == "application/json":
            form = await request.json()
            form = form if isinstance(form, dict) else {}
        else:
            form = await request.post()
        target = _safe_next(str(form.get("next") or "/"))
        if not self._token_ok(str(form.get("token") or "")):
            log.warning("sign-in with a wrong token from %s", request.remote)
            return self._page(target, "That token is not right.", 401)
        response = web.Response(status=303, headers={"Location": target})
        response.set_cookie(SESSION_COOKIE, self._session, httponly=True, samesite="Strict", path="/",
                            secure=request.secure)
        return response

    @staticmethod
    def _page(target: str, error: str, status: int) -> web.Response:
        return web.Response(text=_LOGIN_PAGE.format(error=html.escape(error), next=html.escape(target)),
                            content_type="text/html", status=status,
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})


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

    middlewares = [json_errors, same_origin]
    if auth_token:
        middlewares.append(TokenGate(auth_token).middleware)
    return middlewares

