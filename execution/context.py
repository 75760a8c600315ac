"""The context a node function receives: everything it may reach of the engine, passed explicitly.

Native nodes get it as their first argument. V1 (ComfyUI-style) nodes cannot take it, so the scheduler also sets
it in a context variable for the duration of the call; the compat helpers (ProgressBar, interrupt checks) read it
from there. It is per task, so concurrent async nodes each see their own.
"""
from __future__ import annotations

import contextvars
import threading
import time
from typing import Any, Optional

from execution.graph_builder import GraphBuilder


class Interrupted(Exception):
    """Raised inside a node when its job was interrupted; the scheduler ends the job as interrupted."""

    def __init__(self, message: str = "Job interrupted") -> None:
        super().__init__(message)


class JobControl:
    """Per-job switches another thread may flip: interrupt."""

    def __init__(self) -> None:
        self._interrupt = threading.Event()

    def interrupt(self) -> None:
        self._interrupt.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupt.is_set()


class NodeContext:
    """What one node execution may use: ids, progress reporting, interrupt checks, previews and services."""

    __slots__ = ("job", "node_id", "display_node_id", "class_type", "_last_progress")

    def __init__(self, job: Any, node_id: str, display_node_id: str, class_type: str) -> None:
        self.job = job  # the scheduler's per-job state (execution.scheduler.JobRun)
        self.node_id = node_id
        self.display_node_id = display_node_id
        self.class_type = class_type
        self._last_progress = 0.0

    # identity -------------------------------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.job.prompt_id

    @property
    def prompt(self) -> dict:
        return self.job.prompt

    @property
    def extra_data(self) -> dict:
        return self.job.extra_data

    @property
    def extra_pnginfo(self) -> Optional[dict]:
        return self.job.extra_data.get("extra_pnginfo")

    @property
    def services(self) -> Any:
        return self.job.services

    # progress and interrupts -------------------------------------------------------------------------------------
    @property
    def interrupted(self) -> bool:
        return self.job.control.interrupted

    def check_interrupt(self) -> None:
        if self.job.control.interrupted:
            raise Interrupted()

    def progress(self, value: float, total: Optional[float] = None, preview: Any = None) -> None:
        """Report progress of this node (and optionally a preview image); also an interrupt point."""
        self.check_interrupt()
        self.job.report_progress(self, value, total)
        if preview is not None:
            self.send_preview(preview)

    def send_preview(self, image: Any, image_format: str = "JPEG", max_size: Optional[int] = None) -> None:
        """Send a preview image for this node: a PIL image, or the V1 tuple (format, image, max_size)."""
        if isinstance(image, tuple) and len(image) == 3:
            image_format, image, max_size = image
        self.job.sink.preview(self.job.prompt_id, self.display_node_id, image, image_format, max_size)

    def show_text(self, text: str) -> None:
        """Show information on this node (a `progress_text` event), as ComfyUI's nodes send their text."""
        self.job.emit("progress_text", {"node": self.display_node_id, "text": text})

    def report_text(self, text: str) -> None:
        """Show a message on this node (a `progress_text` event) and log it: warnings a user should see."""
        import logging
        logging.getLogger("tessera.nodes").warning("node %s (%s): %s", self.node_id, self.class_type, text)
        self.show_text(text)

    def graph_builder(self) -> GraphBuilder:
        """A builder for node expansion, its ids prefixed for this node and call."""
        return GraphBuilder()

    def now(self) -> float:
        return time.perf_counter()


class _DetachedJob:
    """Stands in for a job when a node is called outside one (a pack calling a built-in at import time or from a
    thread of its own): the engine's services, no prompt, nobody to report progress or previews to."""

    def __init__(self, services: Any) -> None:
        from execution.events import EventSink  # noqa: PLC0415 - events imports nothing of ours

        self.services = services
        self.prompt_id = ""
        self.prompt: dict = {}
        self.extra_data: dict = {}
        self.control = JobControl()
        self.sink = EventSink()

    def report_progress(self, ctx: Any, value: float, total: Optional[float]) -> None:
        pass

    def emit(self, event: str, data: dict, record: bool = False) -> None:
        pass

    def hidden_value(self, node_id: str, kind: Any) -> Any:
        return None


def detached_context(services: Any, class_type: str) -> NodeContext:
    """A NodeContext for running a node outside any job (see _DetachedJob)."""
    return NodeContext(_DetachedJob(services), "", "", class_type)


_current: contextvars.ContextVar = contextvars.ContextVar("tessera_node_context", default=None)


def current_context() -> Optional[NodeContext]:
    """The context of the node running in this task, or None outside node execution."""
    return _current.get()


def set_current_context(ctx: Optional[NodeContext]) -> contextvars.Token:
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token) -> None:
    _current.reset(token)
