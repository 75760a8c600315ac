"""Everything the route handlers share, in one object stored on the aiohttp app (no module globals)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, List

from aiohttp import web

from api.websocket import ClientHub
from execution.job_store import JobStore
from execution.scheduler import Executor
from model_management.services import Services
from execution.worker import Worker
from graph.catalogue import Catalogue


@dataclass
class ServerState:
    settings: Any  # the parsed command line (argparse.Namespace)
    services: Services
    catalogue: Catalogue
    executor: Executor
    store: JobStore
    hub: ClientHub
    worker: Worker = None  # set once the hub exists
    users: Any = None  # api.user_store.UserStore
    logs: Any = None  # api.log_buffer.LogBuffer
    packs: List[Any] = field(default_factory=list)  # compat.packs.PackResult per loaded pack
    prompt_handlers: List[Callable[[dict], dict]] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    def status_payload(self) -> dict:
        return {"exec_info": {"queue_remaining": self.store.pending_count()}}

    def broadcast_status(self) -> None:
        self.hub.broadcast_status(self.status_payload)


STATE = web.AppKey("tessera_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]


def json_error(status: int, message: str, kind: str = "bad_request", **extra: Any) -> web.Response:
    """A 4xx with a JSON body that says what was wrong."""
    return web.json_response({"error": {"type": kind, "message": message, "details": extra.pop("details", ""),
                                        "extra_info": extra}, "node_errors": {}}, status=status)


async def read_json(request: web.Request, default: Any = None) -> Any:
    """The request body as JSON; raises web.HTTPException subclasses with JSON bodies on bad input."""
    ctype = request.content_type
    # scripts often post JSON without a JSON content type (curl -d, requests' data=); only multipart is refused
    if ctype.startswith("multipart/"):
        raise web.HTTPUnsupportedMediaType(
            text=error_text(f"expected a JSON body, got Content-Type {ctype}"), content_type="application/json")
    raw = await request.read()
    if not raw.strip():
        if default is not None:
            return default
        raise web.HTTPBadRequest(text=error_text("the request body is empty; expected JSON"),
                                 content_type="application/json")
    try:
        import json
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=error_text(f"the request body is not valid JSON: {exc}"),
                                 content_type="application/json")


def error_text(message: str, kind: str = "invalid_request") -> str:
    import json
    return json.dumps({"error": {"type": kind, "message": message, "details": "", "extra_info": {}},
                       "node_errors": {}})
