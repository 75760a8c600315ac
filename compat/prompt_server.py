"""`server.PromptServer.instance` for V1 packs: routes, send_sync, client_id, prompt_queue, on-prompt handlers.

Packs register routes on `PromptServer.instance.routes` while they are imported; the server adds that table to
the app after loading them. The instance wraps the real server state; the class attribute `instance` is the one
piece of global state the legacy API demands.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from aiohttp import web


class BinaryEventTypes:
    """Binary websocket frame types packs pass to `send_sync` (`server.BinaryEventTypes`)."""
    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


def api_prefixed(routes: web.RouteTableDef) -> list:
    """Each route packs registered, also under `/api` (the frontend calls `/api/<pack>/...`), as ComfyUI does."""
    prefixed = []
    taken = {(r.method, r.path) for r in routes if isinstance(r, web.RouteDef)}
    for route in routes:
        if isinstance(route, web.RouteDef) and (route.method, "/api" + route.path) not in taken \
                and not route.path.startswith("/api/"):
            prefixed.append(web.RouteDef(route.method, "/api" + route.path, route.handler, dict(route.kwargs)))
    return prefixed


class _QueueView:
    """The parts of ComfyUI's PromptQueue that packs read."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def get_current_queue(self) -> tuple:
        running, pending = self._state.store.queue()
        return [j.item() for j in running], [j.item() for j in pending]

    def get_current_queue_volatile(self) -> tuple:
        return self.get_current_queue()

    def get_tasks_remaining(self) -> int:
        return self._state.store.pending_count()

    def wipe_queue(self) -> None:
        self._state.store.clear_pending()

    def delete_queue_item(self, function: Callable[[list], bool]) -> bool:
        _, pending = self._state.store.queue()
        doomed = [j.prompt_id for j in pending if function(j.item())]
        return self._state.store.delete_pending(doomed) > 0

    def get_history(self, prompt_id: Optional[str] = None, max_items: Optional[int] = None,
                    offset: int = -1) -> dict:
        if prompt_id is not None:
            entry = self._state.store.history_entry(prompt_id)
            return {prompt_id: entry} if entry else {}
        return self._state.store.history(max_items, None if offset < 0 else offset)


class PromptServer:
    instance: Optional["PromptServer"] = None

    def __init__(self, state: Any, app: web.Application) -> None:
        self._state = state
        self.app = app
        self.routes = web.RouteTableDef()
        self.prompt_queue = _QueueView(state) if getattr(state, "store", None) is not None else None
        self.client_id: Optional[str] = None
        self.last_node_id: Optional[str] = None
        self.last_prompt_id: Optional[str] = None
        self.loop = None
        self.supports = ["custom_nodes_from_web"]
        PromptServer.instance = self

    def send_sync(self, event: Any, data: Any, sid: Optional[str] = None) -> None:
        """A JSON event, or a binary one (`BinaryEventTypes`: a preview image, `(format, image, max_size)`;
        with metadata, `((format, image, max_size), metadata)`)."""
        if self._state is None:  # the headless runner: there is nobody to tell
            return
        if isinstance(event, int):
            self._send_preview(event, data, sid)
            return
        self._state.hub.send_threadsafe(event, data, sid)

    def _send_preview(self, kind: int, data: Any, sid: Optional[str]) -> None:
        metadata = {"node_id": self.last_node_id, "display_node_id": self.last_node_id,
                    "prompt_id": self.last_prompt_id}
        if kind == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA:
            data, extra = data
            metadata.update(extra or {})
        elif kind not in (BinaryEventTypes.PREVIEW_IMAGE, BinaryEventTypes.UNENCODED_PREVIEW_IMAGE):
            raise ValueError(f"send_sync: binary event type {kind} is not supported (previews only: 1, 2, 4)")
        image_format, image, max_size = data
        self._state.hub.send_image(image, str(image_format).upper(), max_size, metadata, sid)

    async def send(self, event: str, data: Any, sid: Optional[str] = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: Optional[str] = None) -> None:
        self.send_sync(event, data, sid)

    @property
    def sockets_metadata(self) -> dict:
        """Per connected client id: {"feature_flags": what it announced} (read by comfy_api.feature_flags)."""
        clients = getattr(getattr(self._state, "hub", None), "clients", None) or {}
        return {sid: {"feature_flags": dict(client.features)} for sid, client in list(clients.items())}

    def send_progress_text(self, text: str, node_id: str, sid: Optional[str] = None) -> None:
        self.send_sync("progress_text", {"text": text, "node": node_id}, sid or self.client_id)

    def add_on_prompt_handler(self, handler: Callable[[dict], dict]) -> None:
        if self._state is not None:
            self._state.prompt_handlers.append(handler)

    def trigger_on_prompt(self, json_data: dict) -> dict:
        for handler in (self._state.prompt_handlers if self._state is not None else []):
            json_data = handler(json_data)
        return json_data

    def observe(self, event: str, data: dict) -> None:
        """Called for every engine event: keeps client_id / last_node_id current, as packs expect."""
        if event == "execution_start":
            self.last_prompt_id = data.get("prompt_id")
        elif event == "executing":
            self.last_node_id = data.get("node")
