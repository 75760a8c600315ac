"""Where the engine's events go: a pluggable sink.

The scheduler calls `send(event, data)` for every event of docs/architecture.md §4.1 (execution_start, execution_cached,
executing, progress, progress_state, executed, execution_success, execution_error, execution_interrupted) and
`preview(...)` for preview images. The server turns these into websocket frames; the CLI into a progress bar; tests
record them. Sinks must not raise: a failing sink never takes a job down.
"""
from __future__ import annotations

import threading
from typing import Any, List, Optional, Tuple


class EventSink:
    """Base sink: ignores everything. Subclass and override what you need."""

    def send(self, event: str, data: dict) -> None:
        pass

    def preview(self, prompt_id: str, node_id: str, image: Any, image_format: str = "JPEG",
                max_size: Optional[int] = None) -> None:
        pass


class RecordingSink(EventSink):
    """Keeps every event in order; handy for tests and for the CLI runner's summary."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, dict]] = []
        self.previews: List[tuple] = []
        self._lock = threading.Lock()

    def send(self, event: str, data: dict) -> None:
        with self._lock:
            self.events.append((event, data))

    def preview(self, prompt_id: str, node_id: str, image: Any, image_format: str = "JPEG",
                max_size: Optional[int] = None) -> None:
        with self._lock:
            self.previews.append((prompt_id, node_id, image, image_format))

    def of(self, event: str) -> List[dict]:
        return [d for e, d in self.events if e == event]

    def names(self) -> List[str]:
        return [e for e, _ in self.events]


class FanOutSink(EventSink):
    """Sends every event to several sinks."""

    def __init__(self, *sinks: EventSink) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def send(self, event: str, data: dict) -> None:
        for sink in self.sinks:
            sink.send(event, data)

    def preview(self, *args: Any, **kwargs: Any) -> None:
        for sink in self.sinks:
            sink.preview(*args, **kwargs)


FINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class HoldFinalEvents(EventSink):
    """Passes events through, but keeps a job's final event (success, error, interrupted) until `release()`: the
    worker writes the history first, so a client reacting to the final event always finds the job's entry."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.held: List[Tuple[str, dict]] = []

    def send(self, event: str, data: dict) -> None:
        if event in FINAL_EVENTS:
            self.held.append((event, data))
            return
        self.inner.send(event, data)

    def preview(self, *args: Any, **kwargs: Any) -> None:
        self.inner.preview(*args, **kwargs)

    def release(self) -> None:
        held, self.held = self.held, []
        for event, data in held:
            self.inner.send(event, data)


class NodeTracker(EventSink):
    """Passes events through and remembers the node a job is executing now, so a client that connects mid-job
    can be told where it is."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.node: Optional[str] = None

    def send(self, event: str, data: dict) -> None:
        if event == "executing":
            self.node = data.get("node")
        self.inner.send(event, data)

    def preview(self, *args: Any, **kwargs: Any) -> None:
        self.inner.preview(*args, **kwargs)
