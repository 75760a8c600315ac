"""Websocket clients and how engine events reach them (docs/architecture.md §4.1).

The worker thread produces events; `ClientHub.send_threadsafe` hands them to the server's event loop, where one
pump task delivers them in order: to the job's client when it has one, to everyone otherwise (and `status` always
to everyone). Preview images go out as binary frames: type 1 (format + bytes) or, for clients that announced
`supports_preview_metadata` in a first `feature_flags` message, type 4 (JSON metadata header + bytes).
"""
from __future__ import annotations

import asyncio
import collections
import io
import json
import logging
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

from aiohttp import WSMsgType, web

from execution.events import EventSink

log = logging.getLogger("tessera.ws")

PREVIEW_IMAGE, PREVIEW_IMAGE_WITH_METADATA = 1, 4
_LATEST_STATUS = object()  # placeholder: the status payload is computed when the message is delivered
FORMAT_CODES = {"JPEG": 1, "PNG": 2}


@dataclass
class Client:
    ws: web.WebSocketResponse
    features: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Preview:
    image_bytes: bytes
    image_format: str
    metadata: dict


class ClientHub:
    def __init__(self, server_features: Optional[dict] = None) -> None:
        self.clients: Dict[str, Client] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._inbox: collections.deque = collections.deque()
        self._wake_scheduled = False
        self.server_features = server_features or {}
        self._pump: Optional[asyncio.Task] = None
        self._status_scheduled = False
        self._status_payload: Callable[[], dict] = dict

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pump = asyncio.ensure_future(self._deliver_forever())

    async def stop(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        for client in list(self.clients.values()):
            await client.ws.close()

    # -- sending ---------------------------------------------------------------------------------------------------
    def send_threadsafe(self, event: str, data: Any, sid: Optional[str] = None) -> None:
        """From any thread: queue a JSON event (or a Preview) for delivery. Bursts share one loop wake-up."""
        if self.loop is None or self.loop.is_closed():
            return
        self._inbox.append((event, data, sid))
        if not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # loop shutting down
                pass

    async def send(self, event: str, data: Any, sid: Optional[str] = None) -> None:
        self.send_threadsafe(event, data, sid)

    def send_image(self, image: Any, image_format: str, max_size: Optional[int], metadata: dict,
                   sid: Optional[str] = None) -> None:
        """From any thread: a preview image (PIL image or encoded bytes) as a binary frame."""
        data = encode_preview(image, image_format, max_size)
        if data is not None:
            mime = "image/png" if image_format == "PNG" else "image/jpeg"
            self.send_threadsafe("preview", Preview(data, image_format, {**metadata, "image_type": mime}), sid)

    def broadcast_status(self, payload: Callable[[], dict]) -> None:
        """From any thread: tell every client the queue changed. Bursts collapse into one message carrying the
        state at delivery time, so a busy queue does not flood every client with stale counts."""
        if self.loop is None or self.loop.is_closed():
            return
        self._status_payload = payload
        if not self._status_scheduled:
            self._status_scheduled = True
            self.send_threadsafe("status", _LATEST_STATUS, None)

    async def _deliver_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_scheduled = False
            while self._inbox:
                await self._deliver(*self._inbox.popleft())

    async def _deliver(self, event: str, data: Any, sid: Optional[str]) -> None:
        if data is _LATEST_STATUS:
            self._status_scheduled = False
            data = {"status": self._status_payload()}
        targets = [self.clients.get(sid)] if sid is not None else list(self.clients.values())
        text = None if isinstance(data, Preview) else json.dumps({"type": event, "data": data}, default=repr)
        for client in targets:
            if client is None or client.ws.closed:
                continue
            try:
                if text is None:
                    await client.ws.send_bytes(_preview_frame(data, client))
                else:
                    await client.ws.send_str(text)
            except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError):
                    raise
                log.debug("dropping message to a closed client: %s", exc)

    # -- the /ws route ---------------------------------------------------------------------------------------------
    async def handle(self, request: web.Request, status_payload: Callable[[], dict],
                     on_connect: Callable[[str], None] = lambda sid: None) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        previous = self.clients.get(sid)
        if previous is not None and not previous.ws.closed:
            await previous.ws.close()
        self.clients[sid] = Client(ws)
        try:
            await ws.send_str(json.dumps({"type": "status", "data": {"status": status_payload(), "sid": sid}}))
            on_connect(sid)
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._client_message(sid, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            current = self.clients.get(sid)
            if current is not None and current.ws is ws:
                del self.clients[sid]
        return ws

    def _client_message(self, sid: str, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            flags = message.get("data")
            if isinstance(flags, dict) and sid in self.clients:
                self.clients[sid].features.update(flags)
                self.send_threadsafe("feature_flags", dict(self.server_features), sid)


def _preview_frame(preview: Preview, client: Client) -> bytes:
    if client.features.get("supports_preview_metadata"):
        header = json.dumps(preview.metadata).encode()
        return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(header)) + header + preview.image_bytes
    return struct.pack(">II", PREVIEW_IMAGE, FORMAT_CODES.get(preview.image_format, 1)) + preview.image_bytes


def encode_preview(image: Any, image_format: str = "JPEG", max_size: Optional[int] = None) -> Optional[bytes]:
    """PIL image (or raw bytes) -> encoded bytes, downscaled to `max_size` on its longer side."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if not hasattr(image, "save"):
        return None
    if max_size and max(image.size) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size))
    buffer = io.BytesIO()
    if image_format == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buffer, format=image_format, quality=95) if image_format == "JPEG" else image.save(buffer, format="PNG")
    return buffer.getvalue()


class ServerSink(EventSink):
    """Engine events of one job, sent to the job's client (or everyone when it has none)."""

    def __init__(self, hub: ClientHub, client_id: Optional[str], previews: bool = True,
                 on_event: Optional[Callable[[str, dict], None]] = None) -> None:
        self.hub = hub
        self.client_id = client_id
        self.previews = previews
        self.on_event = on_event

    def send(self, event: str, data: dict) -> None:
        if self.on_event is not None:
            self.on_event(event, data)
        self.hub.send_threadsafe(event, data, self.client_id)

    def preview(self, prompt_id: str, node_id: str, image: Any, image_format: str = "JPEG",
                max_size: Optional[int] = None) -> None:
        if not self.previews:
            return
        meta = {"node_id": node_id, "display_node_id": node_id, "prompt_id": prompt_id}
        self.hub.send_image(image, image_format, max_size, meta, self.client_id)
