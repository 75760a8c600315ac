"""The front's pool of Ray workers: it takes the place of the in-process `Worker` with `--workers ray[:ADDRESS]`.

One slot per actor. A dispatcher thread wakes whenever the queue changes (or a slot falls idle), asks the routing
policy which pending job each idle slot should take (the slot idle longest asks first), claims it in the durable
store and hands it to the slot's thread. That thread streams the job from its actor and feeds what comes back to the
same `HoldFinalEvents(ServerSink)` chain the local worker uses: events (with output files landed in the front's
folders under names free there), previews, and messages packs send; then it writes the history with the route and
releases the final event and `executing {node: null}` -- the single-process sequence.

A worker that dies under a job (its process killed, its node lost) shows as an actor error on the stream: the job
goes back to the queue once, at its place, with the failed attempt recorded, and fails with the reason the second
time. The slot waits for Ray to restart its actor (`max_restarts=-1`), forgets what it held, and serves again.
"""
from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from execution.events import EventSink, HoldFinalEvents, NodeTracker
from execution.job_store import ERROR, JobStore, QueuedJob
from execution.worker import internal_error, log_outcome
from scaleout.landing import OutputLanding, apply_renames
from scaleout.routing import PendingJob, Route, WorkerView, job_files, job_keys, pick_job

log = logging.getLogger("tessera.scaleout")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECT_STORE_BYTES = 256 * 2 ** 20  # a local instance's store: job results pass through it (spilled to disk past it)
RESTART_TIMEOUT = 300.0  # seconds a slot waits for its actor to come back before it gives up on it


@dataclass
class PoolSettings:
    """What --workers and its companion flags ask for."""
    address: Optional[str] = None  # None: start a local Ray instance; else join this cluster ("auto", "ray://...")
    count: Optional[int] = None  # workers; default: one per GPU, else one per `cpus` cores
    cpus: float = 1.0  # CPU cores per worker
    gpus: Optional[float] = None  # GPUs per worker; None: 1 when the cluster has GPUs, else 0
    spread_after: int = 3
    shared_output: bool = False  # staging on storage every host mounts at the same path: files move, no bytes
    keep_client_order: bool = False  # a client's jobs start in queue order (routing reorders only across clients)
    max_attempts: int = 2  # a job whose worker died runs once more, then fails

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PoolSettings":
        spec = args.workers or ""
        if spec != "ray" and not spec.startswith("ray:"):
            raise ValueError(f"--workers {spec!r}: expected ray or ray:ADDRESS")
        return cls(address=spec[4:] or None, count=args.worker_count, cpus=args.cpus_per_worker,
                   gpus=args.gpus_per_worker, spread_after=args.spread_after,
                   keep_client_order=args.keep_client_order, shared_output=args.shared_output)


def ray_died_errors() -> tuple:
    import ray.exceptions as errors
    return errors.RayActorError, errors.ActorUnavailableError


class _Slot:
    """One actor, as the front sees it: ready or restarting, busy with a job or idle, and what it holds."""

    def __init__(self, pool: "RayPool", name: str, actor: Any) -> None:
        self.pool = pool
        self.name = name
        self.actor = actor
        self.ready = False
        self.busy = False
        self.job: Optional[QueuedJob] = None
        self.tracker: Optional[NodeTracker] = None
        self.files: frozenset = frozenset()
        self.keys: frozenset = frozenset()
        self.idle_since = time.monotonic()
        self.jobs_done = 0
        self.restarts = 0
        self.pid: Optional[int] = None

    def view(self) -> WorkerView:
        return WorkerView(self.name, self.busy, self.files, self.keys)

    def describe(self) -> dict:
        return {"name": self.name, "ready": self.ready, "busy": self.busy, "pid": self.pid,
                "prompt_id": self.job.prompt_id if self.job is not None else None, "jobs_done": self.jobs_done,
                "restarts": self.restarts, "files": sorted(self.files), "cached_outputs": len(self.keys)}

    def start(self, job: QueuedJob, route: Route, needs: PendingJob) -> None:
        """Called by the dispatcher: the slot is busy at once, and counts as holding the job's models (it is
        loading them), so jobs on the same models wait for it instead of loading a second copy elsewhere."""
        self.busy, self.job = True, job
        self.files, self.keys = self.files | needs.files, self.keys | needs.keys
        threading.Thread(target=self.pool._run_job, args=(self, job, route), name=f"tessera-{self.name}",
                         daemon=True).start()


def connection_hint(exc: BaseException, address: Optional[str]) -> str:
    """What to try when joining a cluster fails: Ray's own error names only the address, while the cause is most
    often the token authentication that `ray start` turns on (the reason shows only in Ray's gcs_client lines)."""
    if not address or not isinstance(exc, ConnectionError):
        return ""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return (" (RAY_AUTH_MODE=token is set: check that the token in RAY_AUTH_TOKEN or ~/.ray/auth_token is the "
                "head's)")
    return (" (a cluster started with `ray start` may require token authentication: start the front with "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token)")


class RayPool:
    def __init__(self, store: JobStore, catalogue: Any, hub: Any, sink_for: Callable[[QueuedJob], EventSink],
                 args: argparse.Namespace, folders: Dict[str, str], settings: PoolSettings,
                 on_queue_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.catalogue = catalogue
        self.hub = hub
        self.sink_for = sink_for
        self.args = args
        self.settings = settings
        self.on_queue_change = on_queue_change
        self.staging = os.path.join(args.temp_directory or os.path.join(args.base_directory, "temp"), "workers")
        self.landing = OutputLanding(folders, self.staging if settings.shared_output else None)
        self.slots: List[_Slot] = []
        self._lock = threading.RLock()  # guards the slots' busy/job/holdings between dispatcher and slot threads
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._needs: Dict[str, PendingJob] = {}  # per pending prompt: its files and cache keys, computed once

    # -- the interface the server's routes use (as on execution.worker.Worker) ---------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._boot_and_dispatch, name="tessera-pool", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.interrupt()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout)
        import ray
        if ray.is_initialized():
            ray.shutdown()

    def interrupt(self, prompt_id: Optional[str] = None) -> bool:
        """Interrupt that running job on its worker; with no prompt id, every running job (as ComfyUI's
        /interrupt stops whatever is processing)."""
        hit = False
        with self._lock:
            for slot in self.slots:
                job = slot.job
                if job is not None and slot.ready and (prompt_id is None or job.prompt_id == prompt_id):
                    slot.actor.interrupt.remote(job.prompt_id)
                    hit = True
        return hit

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Every worker frees (now when idle, after its job otherwise); what routing thinks they hold follows."""
        threading.Thread(target=self._free_all, args=(unload_models, free_memory), name="tessera-pool-free",
                         daemon=True).start()

    def running_nodes(self) -> list:
        with self._lock:
            return [(slot.job, slot.tracker.node) for slot in self.slots
                    if slot.job is not None and slot.tracker is not None and slot.tracker.node is not None]

    def describe(self) -> list:
        with self._lock:
            return [slot.describe() for slot in self.slots]

    # -- starting the workers ----------------------------------------------------------------------------------
    def _connect(self) -> None:
        import ray
        job_config = ray.job_config.JobConfig(code_search_path=[ROOT])  # the workers import this checkout
        if self.settings.address:
            ray.init(address=self.settings.address, job_config=job_config, log_to_driver=False)
        else:
            cpus = self.settings.count * self.settings.cpus if self.settings.count else None
            ray.init(num_cpus=cpus, include_dashboard=False, job_config=job_config, log_to_driver=False,
                     object_store_memory=OBJECT_STORE_BYTES)

    def _plan(self) -> tuple:
        """(worker count, GPUs per worker): one per GPU when the cluster has GPUs, else one per `cpus` cores."""
        import ray
        resources = ray.cluster_resources()
        gpus = self.settings.gpus
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        if self.settings.count:
            return self.settings.count, gpus
        if gpus > 0:
            return max(1, int(resources.get("GPU", 0) // gpus)), gpus
        return max(1, int(resources.get("CPU", 1) // self.settings.cpus)), 0.0

    def _boot_and_dispatch(self) -> None:
        try:
            import ray
            from scaleout.actor import EngineWorker
            self._connect()
            count, gpus = self._plan()
            remote = ray.remote(EngineWorker)
            for index in range(count):
                name = f"worker-{index}"
                actor = remote.options(num_cpus=self.settings.cpus, num_gpus=gpus, max_restarts=-1,
                                       max_task_retries=0, max_concurrency=4, name=f"tessera-{os.getpid()}-{name}"
                                       ).remote(self.args, name, os.path.join(self.staging, name),
                                                self.settings.shared_output)
                self.slots.append(_Slot(self, name, actor))
            for slot in self.slots:
                self._wait_ready(slot)
            log.info("scale-out: %d Ray workers ready (%s)", len(self.slots),
                     self.settings.address or "local instance")
        except Exception as exc:  # the front keeps serving its API; jobs wait, and the log says why
            log.error("scale-out: the Ray workers did not start: %s%s", exc,
                      connection_hint(exc, self.settings.address))
            return
        self._dispatch_loop()

    def _wait_ready(self, slot: _Slot) -> bool:
        import ray
        deadline = time.monotonic() + RESTART_TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                info = ray.get(slot.actor.ping.remote(), timeout=60)
            except ray_died_errors() + (ray.exceptions.GetTimeoutError,):
                time.sleep(0.5)
                continue
            slot.pid, slot.ready = info["pid"], True
            self.store.wake()
            return True
        log.error("scale-out: %s did not come back within %.0f s", slot.name, RESTART_TIMEOUT)
        return False

    # -- dispatch ----------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            version = self.store.version
            self._dispatch()
            self.store.wait_for_change(version, 0.5)

    def _needs_of(self, job: QueuedJob) -> PendingJob:
        needs = self._needs.get(job.prompt_id)
        if needs is None:
            try:
                keys = job_keys(job.prompt, self.catalogue)
            except Exception:  # a prompt routing cannot read still runs; it just matches no cached outputs
                keys = frozenset()
            needs = self._needs[job.prompt_id] = PendingJob(job.prompt_id, job_files(job.prompt), keys,
                                                                  job.client_id)
        return needs

    def _dispatch(self) -> None:
        with self._lock:
            idle = sorted((s for s in self.slots if s.ready and not s.busy), key=lambda s: s.idle_since)
            if not idle:
                return
            pending = self.store.pending()
            needs = [self._needs_of(job) for job in pending]
            live = {job.prompt_id for job in pending}
            for prompt_id in list(self._needs):
                if prompt_id not in live:
                    del self._needs[prompt_id]
            for slot in idle:
                route = pick_job(slot.view(), needs, [s.view() for s in self.slots if s.ready],
                                 self.settings.spread_after, self.settings.keep_client_order)
                if route is None:
                    continue
                job = self.store.claim(route.prompt_id)
                chosen = next(n for n in needs if n.prompt_id == route.prompt_id)
                needs.remove(chosen)
                if job is not None:
                    slot.start(job, route, chosen)

    # -- one job on one slot (the slot's thread) ---------------------------------------------------------------
    def _run_job(self, slot: _Slot, job: QueuedJob, route: Route) -> None:
        earlier = (self.store.route_of(job.prompt_id) or {}).get("attempts", [])
        record = {**route.record(), "attempts": earlier + [{"worker": slot.name, "reason": route.reason}]}
        tracker = NodeTracker(self.sink_for(job))
        sink = HoldFinalEvents(tracker)
        with self._lock:
            slot.tracker = tracker
        self.on_queue_change()
        started = time.monotonic()
        log.info("job %s started on %s (%s)", job.prompt_id, slot.name, route.reason)
        try:
            outcome = self._stream(slot, job, sink)
        except ray_died_errors() as exc:
            self._worker_died(slot, job, record, sink, exc)
            return
        except Exception as exc:  # the front failed to handle what came back: the job fails, the slot lives on
            log.exception("job %s: the front failed on its results", job.prompt_id)
            data = internal_error(job.prompt_id, exc)
            sink.send("execution_error", dict(data))
            outcome = (ERROR, {}, [["execution_error", data]], {}, None)
        status, outputs, messages, meta, state = outcome
        log_outcome(job.prompt_id, status, messages, time.monotonic() - started)
        self.store.finish(job.prompt_id, status, outputs, messages, meta, route=record)
        with self._lock:
            if state is not None:
                slot.files, slot.keys = frozenset(state["files"]), frozenset(state["keys"])
            slot.jobs_done += 1
        self._end(slot, job, sink)

    def _stream(self, slot: _Slot, job: QueuedJob, sink: EventSink) -> tuple:
        import ray
        renames: dict = {}
        stream = slot.actor.run.options(num_returns="streaming").remote(
            job.prompt_id, job.prompt, job.extra_data, job.outputs_to_execute)
        for ref in stream:
            item = ray.get(ref)
            kind = item[0]
            if kind == "event":
                _, event, data, files = item
                if files:
                    renames.update(self.landing.land(files))
                    apply_renames(data.get("output"), renames)
                sink.send(event, data)
            elif kind == "preview":
                sink.preview(*item[1:])
            elif kind == "message":  # a pack's PromptServer.send_sync on the worker
                _, event, data, sid = item
                self.hub.send_threadsafe(event, data, sid)
            elif kind == "image":
                _, image, image_format, max_size, metadata, sid = item
                self.hub.send_image(image, image_format, max_size, metadata, sid)
            elif kind == "outcome":
                _, status, outputs, messages, meta, state = item
                apply_renames(outputs, renames)
                apply_renames(messages, renames)
                return status, outputs, messages, meta, state
        raise RuntimeError("the worker's stream ended without an outcome")

    def _worker_died(self, slot: _Slot, job: QueuedJob, record: dict, sink: HoldFinalEvents,
                     exc: BaseException) -> None:
        reason = f"{slot.name} died during the job ({type(exc).__name__})"
        record["attempts"][-1]["error"] = reason
        log.error("job %s: %s", job.prompt_id, reason)
        with self._lock:
            slot.ready = False
            slot.files, slot.keys = frozenset(), frozenset()
            slot.restarts += 1
        if len(record["attempts"]) < self.settings.max_attempts and self.store.requeue(job.prompt_id, record):
            log.info("job %s goes back to the queue (attempt %d of %d)", job.prompt_id, len(record["attempts"]) + 1,
                     self.settings.max_attempts)
            with self._lock:
                slot.busy, slot.job, slot.tracker = False, None, None
            self.on_queue_change()
        else:
            data = internal_error(job.prompt_id, exc)
            data.update(exception_type="WorkerDied",
                        exception_message=f"{reason}; tried {len(record['attempts'])} times")
            sink.send("execution_error", dict(data))
            self.store.finish(job.prompt_id, ERROR, {}, [["execution_error", data]], {}, route=record)
            self._end(slot, job, sink)
        threading.Thread(target=self._wait_ready, args=(slot,), name=f"tessera-{slot.name}-restart",
                         daemon=True).start()

    def _end(self, slot: _Slot, job: QueuedJob, sink: HoldFinalEvents) -> None:
        with self._lock:
            slot.busy, slot.job, slot.tracker = False, None, None
            slot.idle_since = time.monotonic()
        sink.release()  # the history is written: now the final event may go out
        sink.send("executing", {"node": None, "display_node": None, "prompt_id": job.prompt_id})
        self.on_queue_change()
        self.store.wake()

    def _free_all(self, unload_models: bool, free_memory: bool) -> None:
        import ray
        for slot in list(self.slots):
            if not slot.ready:
                continue
            try:
                ray.get(slot.actor.free.remote(unload_models, free_memory), timeout=120)
                state = ray.get(slot.actor.state.remote(), timeout=60)
            except Exception as exc:  # a worker that died meanwhile comes back empty anyway
                log.warning("scale-out: /free on %s: %s", slot.name, exc)
                continue
            with self._lock:
                if not slot.busy:
                    slot.files, slot.keys = frozenset(state["files"]), frozenset(state["keys"])
