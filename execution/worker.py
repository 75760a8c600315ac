"""The worker: one thread that takes jobs from the durable queue and runs them, one at a time.

It re-validates each job against the current catalogue (files may have changed since it was queued), runs it with
its own event loop (async nodes run concurrently inside a job), writes the history, and only then sends
`executing {node: null}` -- so a client that sees the job end can read its history at once. Interrupts and /free
requests from the HTTP side are handed over through thread-safe flags.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
from typing import Any, Callable, Optional

from execution.context import JobControl
from execution.events import EventSink, HoldFinalEvents, NodeTracker
from execution.job_store import ERROR, INTERRUPTED, SUCCESS, JobStore, QueuedJob
from execution.scheduler import Executor, Job
from execution.tracebacks import client_traceback
from graph.validation import validate_prompt

log = logging.getLogger("tessera.worker")

_STATUS = {"success": SUCCESS, "error": ERROR, "interrupted": INTERRUPTED}


def log_outcome(prompt_id: str, status: str, messages: list, seconds: float) -> None:
    """One console line per finished job, as ComfyUI prints: done in N s, or where and why it failed."""
    if status == SUCCESS:
        log.info("job %s done in %.2f s", prompt_id, seconds)
        return
    if status == INTERRUPTED:
        log.info("job %s interrupted after %.2f s", prompt_id, seconds)
        return
    error = next((data for name, data in messages if name == "execution_error"), {})
    where = f"at node {error['node_id']} ({error.get('node_type')})" if error.get("node_id") else "before any node"
    log.error("job %s failed %s after %.2f s: %s", prompt_id, where, seconds, error.get("exception_message", ""))


class Worker:
    def __init__(self, store: JobStore, executor: Executor, sink_for: Callable[[QueuedJob], EventSink],
                 on_queue_change: Callable[[], None] = lambda: None, services: Any = None) -> None:
        self.store = store
        self.executor = executor
        self.sink_for = sink_for
        self.on_queue_change = on_queue_change
        self.services = services
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.current: Optional[QueuedJob] = None
        self._tracker: Optional[NodeTracker] = None
        self._control: Optional[JobControl] = None
        self._free = DeferredFree(executor, services)
        self.jobs_done = 0

    # -- control from other threads ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tessera-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.interrupt()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout)

    def interrupt(self, prompt_id: Optional[str] = None) -> bool:
        """Interrupt the running job (only if it is `prompt_id`, when given). True if something was interrupted."""
        with self._lock:
            if self._control is None or self.current is None:
                return False
            if prompt_id is not None and prompt_id != self.current.prompt_id:
                return False
            self._control.interrupt()
            return True

    def running_nodes(self) -> list:
        """[(the running job, the node it executes now)]: one pair at most here, one per busy worker on a pool."""
        with self._lock:
            job, tracker = self.current, self._tracker
        return [(job, tracker.node)] if job is not None and tracker is not None and tracker.node is not None else []

    def describe(self) -> list:
        """What /internal/workers shows: this one in-process worker."""
        with self._lock:
            job = self.current
        models = getattr(self.services, "models", None) if self.services is not None else None
        files = models.resident_paths() if models is not None and hasattr(models, "resident_paths") else []
        return [{"name": "local", "ready": True, "busy": job is not None,
                 "prompt_id": job.prompt_id if job is not None else None, "jobs_done": self.jobs_done,
                 "files": sorted(os.path.basename(path) for path in files)}]

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        self._free.request(unload_models, free_memory, idle=self.current is None)

    # -- the thread ----------------------------------------------------------------------------------------------
    def _expire_idle_models(self) -> None:
        """Between jobs: let the model manager unload what outlived its keep-alive."""
        models = getattr(self.services, "models", None) if self.services is not None else None
        if models is not None and hasattr(models, "expire_idle"):
            models.expire_idle()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while not self._stop.is_set():
                self._free.apply()
                self._expire_idle_models()
                job = self.store.claim_next(timeout=0.5)
                if job is None:
                    continue
                if self._stop.is_set():
                    break
                self._run_job(loop, job)
        finally:
            loop.close()

    def _run_job(self, loop: asyncio.AbstractEventLoop, queued: QueuedJob) -> None:
        control = JobControl()
        tracker = NodeTracker(self.sink_for(queued))
        with self._lock:
            self.current, self._control, self._tracker = queued, control, tracker
        self.on_queue_change()
        sink = HoldFinalEvents(tracker)
        started = time.monotonic()
        log.info("job %s started", queued.prompt_id)
        try:
            status, outputs, messages, meta = self._execute(loop, queued, control, sink)
        except Exception as exc:  # a bug in the engine: the job fails, the worker lives on
            log.error("job %s failed inside the engine:\n%s", queued.prompt_id, traceback.format_exc())
            status, outputs, meta = ERROR, {}, {}
            messages = [["execution_error", internal_error(queued.prompt_id, exc)]]
            sink.send("execution_error", dict(messages[0][1]))
        log_outcome(queued.prompt_id, status, messages, time.monotonic() - started)
        self.store.finish(queued.prompt_id, status, outputs, messages, meta)
        with self._lock:
            self.current, self._control, self._tracker = None, None, None
        self.jobs_done += 1
        sink.release()  # the history is written: now the final event may go out
        sink.send("executing", {"node": None, "display_node": None, "prompt_id": queued.prompt_id})
        self.on_queue_change()

    def _execute(self, loop: asyncio.AbstractEventLoop, queued: QueuedJob, control: JobControl,
                 sink: EventSink) -> tuple:
        return execute_queued(self.executor, self.services, loop, queued, control, sink)


class DeferredFree:
    """A /free request, applied between jobs and never under a running one (the local and the Ray workers): kept
    until `apply()`, which drops the cached outputs and unloads the models as asked."""

    def __init__(self, executor: Executor, services: Any) -> None:
        self.executor = executor
        self.services = services
        self._lock = threading.Lock()
        self._request: Optional[tuple] = None

    def request(self, unload_models: bool, free_memory: bool, idle: bool) -> None:
        with self._lock:
            self._request = (unload_models, free_memory)
        if idle:
            self.apply()

    def apply(self) -> None:
        with self._lock:
            request, self._request = self._request, None
        if not request:
            return
        unload_models, free_memory = request
        if free_memory:
            self.executor.free()
        models = getattr(self.services, "models", None) if self.services is not None else None
        if unload_models and models is not None and hasattr(models, "unload_all"):
            models.unload_all()


def internal_error(prompt_id: str, exc: BaseException) -> dict:
    """The execution_error of a job that failed inside the engine (a bug, not a node's error)."""
    return {"prompt_id": prompt_id, "node_id": None, "node_type": None, "exception_type": type(exc).__name__,
            "exception_message": f"internal error: {exc}", "traceback": client_traceback(exc), "executed": [],
            "current_inputs": {}, "current_outputs": [], "timestamp": int(time.time() * 1000)}


def execute_queued(executor: Executor, services: Any, loop: asyncio.AbstractEventLoop, queued: QueuedJob,
                   control: JobControl, sink: EventSink) -> tuple:
    """Re-validate a queued job against this engine's catalogue, then run it: (status, outputs, messages, meta).
    The local worker and each scale-out worker run jobs through this one function."""
    checked = validate_prompt(queued.prompt, executor.catalogue, queued.outputs_to_execute or None, services)
    if not checked.ok:
        data = {"prompt_id": queued.prompt_id, "node_id": None, "node_type": None,
                "exception_type": "ValidationError",
                "exception_message": f"{checked.error['message']}: {checked.error['details']}",
                "traceback": [], "executed": [], "current_inputs": {}, "current_outputs": [],
                "node_errors": checked.node_errors, "timestamp": int(time.time() * 1000)}
        sink.send("execution_start", {"prompt_id": queued.prompt_id, "timestamp": data["timestamp"]})
        sink.send("execution_error", data)
        return ERROR, {}, [["execution_error", data]], {}
    job = Job(queued.prompt_id, checked.prompt, checked.outputs, queued.extra_data, checked.order, control)
    outcome = loop.run_until_complete(executor.execute(job, sink))
    return _STATUS[outcome.status], outcome.outputs, outcome.messages, outcome.meta
