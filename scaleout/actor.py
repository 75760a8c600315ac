"""A scale-out worker: one whole engine in its own process, run by Ray as an actor.

The class is plain Python (the pool wraps it with `ray.remote`), built from the front's command line with private
output and temp folders (staging; on a shared filesystem with --shared-output, so the front moves files instead of
receiving their bytes). `run` is a generator: Ray streams what it yields back to the front in order — every event
the scheduler sends (an `executed` event with the bytes of the files it names, for the front to land), every
preview, and last the outcome with the worker's state (the model files it holds, the cache keys of its outputs).
`interrupt` and `free` arrive on other threads while a job runs (the actor is threaded).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import os
import queue
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

from execution.context import JobControl
from execution.events import EventSink
from execution.job_store import ERROR, QueuedJob
from execution.scheduler import Executor
from execution.worker import DeferredFree, execute_queued, internal_error
from scaleout.engine import cache_from, load_catalogue, services_from

_DONE = object()
FILE_TYPES = ("output", "temp")


def file_refs(value: Any) -> Iterator[dict]:
    """The {filename, subfolder, type} entries anywhere in a ui output (images, gifs, audio, 3D files...)."""
    if isinstance(value, dict):
        if isinstance(value.get("filename"), str) and value.get("type") in FILE_TYPES:
            yield value
        else:
            for inner in value.values():
                yield from file_refs(inner)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from file_refs(inner)


def path_suffixes(path: str, depth: int = 3) -> List[str]:
    """`a/b/c/d.safetensors` -> d.safetensors, c/d.safetensors, b/c/d.safetensors: the names a prompt may use."""
    parts = path.replace("\\", "/").split("/")
    return ["/".join(parts[-n:]) for n in range(1, min(depth, len(parts)) + 1)]


class _PackRelay:
    """The `state` a worker's PromptServer wraps: what packs send (`PromptServer.instance.send_sync`) during a job
    goes onto that job's stream, for the front to send to its clients; outside a job there is nobody to tell."""

    def __init__(self) -> None:
        self.hub = self
        self.store = None
        self.prompt_handlers: list = []
        self.out: Optional["queue.Queue"] = None  # the running job's stream

    def send_threadsafe(self, event: str, data: Any, sid: Optional[str] = None) -> None:
        out = self.out
        if out is not None:
            out.put(("message", event, data, sid))

    def send_image(self, image: Any, image_format: str, max_size: Optional[int], metadata: dict,
                   sid: Optional[str] = None) -> None:
        out = self.out
        if out is not None:
            out.put(("image", image, image_format, max_size, metadata, sid))


class _StreamSink(EventSink):
    """Puts the engine's events on the generator's queue, with the files an `executed` names: their bytes, or with
    a shared output folder their paths (the front moves them into place; nothing large crosses Ray)."""

    def __init__(self, out: "queue.Queue", folders: Dict[str, str], observe: Any = None,
                 ship_paths: bool = False) -> None:
        self.out = out
        self.folders = folders
        self.observe = observe  # the worker's PromptServer keeps last_node_id / last_prompt_id, as packs expect
        self.ship_paths = ship_paths
        self.files: List[str] = []  # what this job wrote and shipped as bytes (removed from staging after it)

    def _read(self, ref: dict) -> Optional[Any]:
        root = os.path.realpath(self.folders[ref["type"]])
        full = os.path.realpath(os.path.join(root, ref.get("subfolder") or "", ref["filename"]))
        if not full.startswith(root + os.sep) or not os.path.isfile(full):
            return None
        if self.ship_paths:
            return full
        with open(full, "rb") as handle:
            data = handle.read()
        self.files.append(full)
        return data

    def send(self, event: str, data: dict) -> None:
        if self.observe is not None:
            self.observe(event, data)
        files = {}
        if event == "executed":
            for ref in file_refs(data.get("output")):
                content = self._read(ref)
                if content is not None:
                    files[(ref["type"], ref.get("subfolder") or "", ref["filename"])] = content
        self.out.put(("event", event, data, files))

    def preview(self, prompt_id: str, node_id: str, image: Any, image_format: str = "JPEG",
                max_size: Optional[int] = None) -> None:
        self.out.put(("preview", prompt_id, node_id, image, image_format, max_size))


class EngineWorker:
    def __init__(self, args: argparse.Namespace, name: str, staging_dir: Optional[str] = None,
                 shared_output: bool = False) -> None:
        from aiohttp import web
        from compat.prompt_server import PromptServer
        self.name = name
        self.shared_output = shared_output  # staging is on storage the front sees at the same path
        args = copy.copy(args)
        if staging_dir is not None:  # outputs go to the front, which lands them in its own folders
            args.output_directory = os.path.join(staging_dir, "output")
            args.temp_directory = os.path.join(staging_dir, "temp")
        self.services = services_from(args)
        self.relay = _PackRelay()
        # packs register routes (nobody serves them here) and send messages through PromptServer.instance
        self.prompt_server = PromptServer(self.relay, web.Application())
        self.catalogue, self.packs = load_catalogue(args, self.services)
        self.executor = Executor(self.catalogue, cache_from(args), self.services)
        self.folders = {"output": self.services.paths.output_dir, "temp": self.services.paths.temp_dir}
        self._lock = threading.Lock()
        self._running: Optional[Tuple[str, JobControl]] = None
        self._free = DeferredFree(self.executor, self.services)

    def ping(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "nodes": len(self.catalogue),
                "packs": [pack.name for pack in self.packs if pack.ok]}

    def state(self) -> dict:
        """What routing asks of a worker: the model file names it holds and the cache keys of its outputs."""
        models = getattr(self.services, "models", None)
        paths = models.resident_paths() if models is not None and hasattr(models, "resident_paths") else []
        return {"files": sorted({name for path in paths for name in path_suffixes(path)}),
                "keys": sorted(self.executor.cache.entries)}

    def interrupt(self, prompt_id: Optional[str] = None) -> bool:
        with self._lock:
            if self._running is None or (prompt_id is not None and prompt_id != self._running[0]):
                return False
            self._running[1].interrupt()
            return True

    def free(self, unload_models: bool, free_memory: bool) -> None:
        """As the local worker does: now when idle, else once the running job ends."""
        with self._lock:
            idle = self._running is None
        self._free.request(unload_models, free_memory, idle)

    def run(self, prompt_id: str, prompt: dict, extra_data: dict, outputs_to_execute: list) -> Iterator[tuple]:
        queued = QueuedJob(0, prompt_id, prompt, extra_data, outputs_to_execute, extra_data.get("client_id"))
        control = JobControl()
        out: "queue.Queue" = queue.Queue()
        sink = _StreamSink(out, self.folders, self.prompt_server.observe, ship_paths=self.shared_output)
        self.prompt_server.client_id = queued.client_id
        result: Dict[str, tuple] = {}

        def work() -> None:
            loop = asyncio.new_event_loop()
            try:
                result["outcome"] = execute_queued(self.executor, self.services, loop, queued, control, sink)
            except Exception as exc:  # a bug in the engine: the job fails, the worker lives on
                data = internal_error(prompt_id, exc)
                sink.send("execution_error", dict(data))
                result["outcome"] = (ERROR, {}, [["execution_error", data]], {})
            finally:
                loop.close()
                out.put(_DONE)

        with self._lock:
            self._running = (prompt_id, control)
            self.relay.out = out
        thread = threading.Thread(target=work, name=f"{self.name}-job", daemon=True)
        thread.start()
        try:
            while True:
                item = out.get()
                if item is _DONE:
                    break
                yield item
            thread.join()
        finally:
            with self._lock:
                self._running = None
                self.relay.out = None
            for path in sink.files:  # shipped to the front: the staging folders stay empty
                try:
                    os.remove(path)
                except OSError:
                    pass
        self._free.apply()
        yield ("outcome", *result["outcome"], self.state())
