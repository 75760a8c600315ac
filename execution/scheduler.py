"""The caching scheduler (docs/architecture.md §4.4).

`Executor` lives as long as the server: it owns the output cache and the V1 node instances. `Executor.execute(job)`
runs one validated prompt:

1. keys -- every node's cache key is computed from its input signature (cache_keys.py);
2. requests -- starting from the output nodes, each needed node is either served from the cache (its upstream is
   then not needed at all) or scheduled after the nodes it links to; identical sub-graphs share one execution;
3. the ready loop -- nodes run in dependency order; lazy inputs are requested only when `check_lazy` asks for
   them; a node that expands adds ephemeral nodes and completes when they do; async nodes run as tasks so
   several can wait at once; interrupts are checked between nodes and list items.

Events go to the job's sink; the outcome (status, ui outputs, status messages) is returned for the history.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from execution.blocker import ExecutionBlocker
from execution.cache_keys import KeyComputer, fingerprint_token, never_equal
from execution.caches import CachedOutput, ClassicCache, OutputCache
from execution.context import Interrupted, JobControl, NodeContext, reset_current_context, set_current_context
from execution.dynamic_graph import DynamicPrompt
from execution.tracebacks import client_traceback
from execution.events import EventSink
from execution.node_call import NodeReturn, merge_returns, normalize, plan_calls, run_calls
from execution.progress import ProgressTracker, describe_inputs
from graph.catalogue import Catalogue
from graph.node_spec import HIDDEN, HIDDEN_KINDS, NodeSpec
from graph.prompt import is_link, link_parts, unwrap_literal


@dataclass
class Job:
    """A validated prompt ready to run."""
    prompt_id: str
    prompt: dict
    outputs: List[str]
    extra_data: dict = field(default_factory=dict)
    order: Optional[List[str]] = None  # from validation: every node after its inputs
    control: JobControl = field(default_factory=JobControl)


@dataclass
class JobOutcome:
    status: str  # "success" | "error" | "interrupted"
    outputs: Dict[str, dict]  # node id -> ui output
    messages: List[list]  # [event, data] pairs for the history's status
    error: Optional[dict] = None
    executed: List[str] = field(default_factory=list)
    cached: List[str] = field(default_factory=list)
    seconds: float = 0.0
    meta: Dict[str, dict] = field(default_factory=dict)  # per ui output: display / parent / real node ids

    @property
    def completed(self) -> bool:
        return self.status == "success"

log = logging.getLogger("tessera.scheduler")


class NodeFailure(Exception):
    """A node raised: carries what the execution_error event reports."""

    def __init__(self, node_id: str, class_type: str, exc: BaseException, inputs: Optional[dict] = None,
                 tb: Optional[list] = None):
        super().__init__(str(exc))
        self.node_id = node_id
        self.class_type = class_type
        self.exc = exc
        self.inputs = inputs or {}
        self.tb = tb if tb is not None else client_traceback(exc)


class ExpansionError(Exception):
    """A node's expansion cannot run (unknown class, bad link, id clash, or a cycle)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    def __init__(self, catalogue: Catalogue, cache: Optional[OutputCache] = None, services: Any = None) -> None:
        self.catalogue = catalogue
        self.cache = cache if cache is not None else ClassicCache()
        self.services = services
        self.instances: Dict[tuple, Any] = {}  # (node id, class) -> V1 instance, kept across runs

    def instance_for(self, node_id: str, spec: NodeSpec) -> Any:
        if spec.create is None:
            return None
        key = (node_id, spec.name)
        inst = self.instances.get(key)
        if inst is None:
            inst = self.instances[key] = spec.create()
        return inst

    async def execute(self, job: Job, sink: Optional[EventSink] = None) -> JobOutcome:
        run = JobRun(self, job, sink or EventSink())
        return await run.run()

    def execute_sync(self, job: Job, sink: Optional[EventSink] = None) -> JobOutcome:
        return asyncio.run(self.execute(job, sink))

    def free(self) -> None:
        """Drop every cached output and node instance."""
        self.cache.clear()
        self.instances.clear()


class JobRun:
    """The state of one job while it runs."""

    def __init__(self, executor: Executor, job: Job, sink: EventSink) -> None:
        self.executor = executor
        self.catalogue = executor.catalogue
        self.cache = executor.cache
        self.services = executor.services
        self.job = job
        self.prompt_id = job.prompt_id
        self.prompt = job.prompt
        self.extra_data = job.extra_data or {}
        self.control = job.control
        self.sink = sink
        self.graph = DynamicPrompt(job.prompt)
        self.fingerprints: Dict[str, Any] = {}
        self.keys = KeyComputer(self.graph, self.catalogue, self.fingerprints.get)
        self.input_maps: Dict[str, dict] = {}
        self.results: Dict[str, CachedOutput] = {}
        self.key_owner: Dict[str, str] = {}
        self.aliases: Dict[str, str] = {}
        self.requested: Set[str] = set()
        self.waiting: Dict[str, Set[str]] = {}
        self.dependents: Dict[str, List[str]] = {}
        self.ready: List[str] = []
        self.tasks: Dict[asyncio.Future, str] = {}
        self.lazy_wanted: Dict[str, Set[str]] = {}
        self.expanding: Dict[str, List[NodeReturn]] = {}
        self.required_outputs: List[str] = list(job.outputs)
        self.used_keys: Set[str] = set()
        self.executed: List[str] = []
        self.ui_outputs: Dict[str, dict] = {}
        self.messages: List[list] = []
        self.progress = ProgressTracker(self)

    # -- helpers ---------------------------------------------------------------------------------------------
    def spec_of(self, node_id: str) -> NodeSpec:
        return self.catalogue.get(self.graph.get_node(node_id)["class_type"])

    def input_map(self, spec: NodeSpec, node_id: Optional[str] = None) -> dict:
        if spec.live_inputs is not None and node_id is not None:  # V3 dynamic inputs: per node
            return spec.input_map(spec.inputs_for(self.graph.get_node(node_id)["inputs"]))
        found = self.input_maps.get(spec.name)
        if found is None:
            found = self.input_maps[spec.name] = spec.input_map()
        return found

    def emit(self, event: str, data: dict, record: bool = False) -> None:
        data.setdefault("prompt_id", self.prompt_id)
        if record:
            self.messages.append([event, data])
        try:
            self.sink.send(event, data)
        except Exception:  # a broken sink never takes the job down, but it is never silent either
            log.exception("event sink %s failed on %r for job %s", type(self.sink).__name__, event,
                          self.prompt_id)

    def report_progress(self, ctx: NodeContext, value: float, total: Optional[float]) -> None:
        self.progress.update(ctx.node_id, value, total)

    async def compute_fingerprint(self, node_id: str) -> None:
        spec = self.spec_of(node_id)
        if spec.fingerprint is None:
            return
        node = self.graph.get_node(node_id)
        literals = {k: unwrap_literal(v) for k, v in node["inputs"].items() if not is_link(v)}
        if spec.links_as_none:  # ComfyUI gives IS_CHANGED constants only: linked inputs are None
            literals.update({k: None for k, v in node["inputs"].items() if is_link(v)})
        ctx = NodeContext(self, node_id, self.graph.get_display_node_id(node_id), spec.name)
        try:
            value = spec.fingerprint(ctx, literals)
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
            self.fingerprints[node_id] = fingerprint_token(value)
        except Exception as exc:  # the node re-runs every time; say so, where the user sees it
            self.fingerprints[node_id] = never_equal()
            log.warning("IS_CHANGED of node %s (%s) raised %s: %s; the node will run every time",
                        node_id, spec.name, type(exc).__name__, exc, exc_info=True)
            self.emit("progress_text", {"node": ctx.display_node_id,
                                        "text": f"IS_CHANGED raised {type(exc).__name__}: {exc}; this node will "
                                                f"run every time"})

    # -- requesting nodes --------------------------------------------------------------------------------------
    def dependencies(self, node_id: str, spec: NodeSpec) -> List[str]:
        declared = self.input_map(spec, node_id)
        wanted = self.lazy_wanted.get(node_id, ())
        deps = []
        for name, value in self.graph.get_node(node_id)["inputs"].items():
            if not isinstance(value, list):
                continue
            link = link_parts(value)
            if link is None:
                continue
            ispec = declared.get(name)
            if ispec is not None and (ispec.raw_link or (ispec.lazy and name not in wanted)):
                continue
            deps.append(link[0])
        return deps

    def wait_on(self, node_id: str, sources: List[str]) -> None:
        pending = self.waiting.setdefault(node_id, set())
        for src in sources:
            if src not in self.results and src not in pending:
                pending.add(src)
                self.dependents.setdefault(src, []).append(node_id)

    def request(self, root: str) -> None:
        """Make sure `root` (and what it needs) will be produced. Iterative: chains may be thousands deep."""
        stack = [root]
        while stack:
            node_id = stack.pop()
            if node_id in self.requested:
                continue
            self.requested.add(node_id)
            key = self.keys.key(node_id)
            self.used_keys.add(key)
            cached = self.cache.get(key)
            if cached is not None:
                self.serve_cached(node_id, cached)
                continue
            owner = self.key_owner.get(key)
            if owner is not None:
                self.aliases[node_id] = owner
                self.wait_on(node_id, [owner])
                if not self.waiting[node_id]:
                    self.ready.append(node_id)
                continue
            self.key_owner[key] = node_id
            deps = self.dependencies(node_id, self.spec_of(node_id))
            self.wait_on(node_id, deps)
            if self.waiting[node_id]:
                stack.extend(d for d in deps if d not in self.requested)
            else:
                self.ready.append(node_id)

    def serve_cached(self, node_id: str, entry: CachedOutput) -> None:
        self.publish_ui(node_id, entry.ui)
        self.complete(node_id, entry)

    def publish_ui(self, node_id: str, ui: Optional[dict]) -> None:
        """Record a node's ui output for the history and send `executed` (cached nodes included)."""
        if ui:
            self.ui_outputs[node_id] = ui
            self.emit("executed", {"node": node_id, "display_node": self.graph.get_display_node_id(node_id),
                                   "output": ui})

    def complete(self, node_id: str, entry: CachedOutput) -> None:
        self.results[node_id] = entry
        for dependent in self.dependents.pop(node_id, ()):
            pending = self.waiting.get(dependent)
            if pending is not None:
                pending.discard(node_id)
                if not pending:
                    self.ready.append(dependent)

    # -- running nodes -----------------------------------------------------------------------------------------
    def gather_inputs(self, node_id: str, spec: NodeSpec) -> tuple:
        """Inputs as item lists; unresolved (lazy) links give [None]. Returns (inputs, unresolved names)."""
        declared = self.input_map(spec, node_id)
        inputs: Dict[str, list] = {}
        unresolved = set()
        for name, value in self.graph.get_node(node_id)["inputs"].items():
            ispec = declared.get(name)
            link = link_parts(value) if isinstance(value, list) else None
            if link is not None:
                if ispec is not None and ispec.raw_link:
                    inputs[name] = [value]
                    continue
                result = self.results.get(link[0])
                if result is None:
                    inputs[name] = [None]
                    unresolved.add(name)
                else:
                    inputs[name] = result.values[link[1]]
            elif (ispec is not None and ispec.section != HIDDEN) or (ispec is None and spec.any_inputs):
                inputs[name] = [unwrap_literal(value)]
        prompt_inputs = self.graph.get_node(node_id)["inputs"]
        for name, ispec in declared.items():
            if ispec.section != HIDDEN:
                continue
            if ispec.type in HIDDEN_KINDS:
                inputs[name] = [self.hidden_value(node_id, ispec.type)]
            elif name not in inputs and name in prompt_inputs:  # a hidden input of the node's own type: the
                inputs[name] = [unwrap_literal(prompt_inputs[name])]  # prompt's literal (links resolved above)
        return inputs, unresolved

    def hidden_value(self, node_id: str, kind: Any) -> Any:
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "PROMPT":
            return self.prompt
        if kind == "DYNPROMPT":
            return self.graph
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        return None

    def on_blocked(self, node_id: str, spec: NodeSpec):
        def handle(blocker: ExecutionBlocker) -> ExecutionBlocker:
            if blocker.message is None:
                return blocker
            self.emit("execution_error", {
                "node_id": self.graph.get_display_node_id(node_id), "node_type": spec.name,
                "executed": list(self.executed), "exception_message": f"Execution Blocked: {blocker.message}",
                "exception_type": "ExecutionBlocked", "traceback": [], "current_inputs": {},
                "current_outputs": []}, record=True)
            return ExecutionBlocker(None)
        return handle

    async def step(self, node_id: str) -> None:
        owner = self.aliases.get(node_id)
        if owner is not None:
            self.serve_cached(node_id, self.results[owner])
            return
        spec = self.spec_of(node_id)
        if node_id in self.expanding:
            returns = self.expanding.pop(node_id)
            values, ui = merge_returns(spec, returns, self.resolve_link)
            self.finish(node_id, spec, values, ui)
            return
        inputs, unresolved = self.gather_inputs(node_id, spec)
        instance = self.executor.instance_for(node_id, spec)
        display = self.graph.get_display_node_id(node_id)
        ctx = NodeContext(self, node_id, display, spec.name)
        try:
            if spec.check_lazy is not None and await self.needs_more(node_id, spec, instance, ctx, inputs,
                                                                     unresolved):
                return
            self.emit("executing", {"node": node_id, "display_node": display})
            self.progress.start(node_id)
            calls = plan_calls(spec, inputs)
            raw = await run_calls(spec, instance, ctx, calls, on_blocked=self.on_blocked(node_id, spec))
            returns = [normalize(r, spec) for r in raw]
            if any(r.expand is not None for r in returns):
                await self.expand(node_id, spec, returns)
                return
            values, ui = merge_returns(spec, returns)
        except (Interrupted, NodeFailure, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise NodeFailure(node_id, spec.name, exc, inputs) from exc
        self.finish(node_id, spec, values, ui)

    async def needs_more(self, node_id: str, spec: NodeSpec, instance: Any, ctx: NodeContext, inputs: dict,
                         unresolved: set) -> bool:
        """Ask check_lazy which lazy inputs are needed; schedule those not yet produced. True if we must wait."""
        answers = await run_calls(spec, instance, ctx, plan_calls(spec, inputs), function=spec.check_lazy)
        needed: Set[str] = set()
        for answer in answers:
            if isinstance(answer, (list, tuple, set)):
                needed.update(n for n in answer if isinstance(n, str) and n in unresolved)
        if not needed:
            return False
        self.lazy_wanted.setdefault(node_id, set()).update(needed)
        node_inputs = self.graph.get_node(node_id)["inputs"]
        sources = [link_parts(node_inputs[n])[0] for n in sorted(needed)]
        self.wait_on(node_id, sources)
        for src in sources:
            self.request(src)
        if self.waiting[node_id]:
            return True
        self.ready.append(node_id)  # everything it asked for was already available: check again
        return True

    def resolve_link(self, link: list) -> list:
        return self.results[str(link[0])].values[link[1]]

    async def expand(self, node_id: str, spec: NodeSpec, returns: List[NodeReturn]) -> None:
        new_nodes: Dict[str, dict] = {}
        for ret in returns:
            if ret.expand:
                new_nodes.update(ret.expand)
        display = self.graph.get_display_node_id(node_id)
        for new_id, info in new_nodes.items():
            if not isinstance(info, dict) or self.catalogue.get(info.get("class_type")) is None:
                cls = info.get("class_type") if isinstance(info, dict) else info
                raise ExpansionError(f"expansion node {new_id} has unknown class {cls!r}")
            if new_id in self.graph.original_prompt:
                raise ExpansionError(f"expansion node id {new_id} clashes with a node of the prompt")
            node = {"class_type": info["class_type"], "inputs": dict(info.get("inputs") or {})}
            self.graph.add_ephemeral_node(new_id, node, node_id, info.get("override_display_id") or display)
        for new_id in new_nodes:
            for value in self.graph.get_node(new_id)["inputs"].values():
                link = link_parts(value) if isinstance(value, list) else None
                if link is not None and not self.graph.has_node(link[0]):
                    raise ExpansionError(f"expansion node {new_id} links to unknown node {link[0]}")
            await self.compute_fingerprint(new_id)
        sources = []
        for ret in returns:
            if ret.expand is not None:
                for value in ret.values:
                    if is_link(value):
                        src = str(value[0])
                        if not self.graph.has_node(src):
                            raise ExpansionError(f"expansion result links to unknown node {src}")
                        sources.append(src)
        self.expanding[node_id] = returns
        self.wait_on(node_id, sources)
        for src in sources:
            self.request(src)
        for new_id in new_nodes:
            if self.spec_of(new_id).output_node:
                self.required_outputs.append(new_id)
                self.request(new_id)
        cycle = self.find_wait_cycle(node_id)
        if cycle:
            raise ExpansionError("expansion creates a dependency cycle: " + " -> ".join(cycle))
        if not self.waiting[node_id]:
            self.ready.append(node_id)

    def find_wait_cycle(self, start: str) -> Optional[List[str]]:
        """A cycle in the waits-on graph reachable from `start`, as a list of node ids, or None."""
        path: List[str] = []
        on_path: Set[str] = set()
        done: Set[str] = set()
        stack = [(start, iter(sorted(self.waiting.get(start, ()))))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if nxt in on_path:
                return path[path.index(nxt):] + [nxt]
            if nxt not in done:
                stack.append((nxt, iter(sorted(self.waiting.get(nxt, ())))))
                path.append(nxt)
                on_path.add(nxt)
        return None

    def finish(self, node_id: str, spec: NodeSpec, values: list, ui: Optional[dict]) -> None:
        entry = CachedOutput(values, ui)
        self.cache.put(self.keys.key(node_id), entry)
        self.executed.append(node_id)
        self.progress.finish(node_id)
        self.serve_cached(node_id, entry)

    # -- the loop ------------------------------------------------------------------------------------------------
    async def prepare(self) -> List[str]:
        order = self.job.order if self.job.order is not None else list(self.prompt)
        # every node's fingerprint, also of nodes only reachable through raw links (an expansion may request them)
        planned = set(order)
        for node_id in order + [n for n in self.prompt if n not in planned]:
            await self.compute_fingerprint(node_id)
        cached = []
        for node_id in order:
            key = self.keys.key(node_id)
            self.used_keys.add(key)
            if key in self.cache:
                cached.append(node_id)
        return cached

    async def loop(self) -> None:
        # ready is a stack: request the outputs last-first so the first output's chain runs first
        for out in reversed(self.required_outputs):
            self.request(out)
        while True:
            if self.control.interrupted:
                raise Interrupted()
            if self.ready:
                node_id = self.ready.pop()
                spec = self.spec_of(node_id)
                if spec.is_async and node_id not in self.aliases and node_id not in self.expanding:
                    self.tasks[asyncio.ensure_future(self.step(node_id))] = node_id
                else:
                    await self.step(node_id)
            elif self.tasks:
                done, _ = await asyncio.wait(list(self.tasks), timeout=0.05,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self.tasks.pop(task)
                    task.result()
            else:
                break
        missing = [o for o in self.required_outputs if o not in self.results]
        if missing:
            raise ExpansionError(f"nodes {missing} could not run: their inputs never became available")

    async def run(self) -> JobOutcome:
        started = time.perf_counter()
        self.cache.begin_job()
        self.emit("execution_start", {"timestamp": _now_ms()}, record=True)
        status, error = "success", None
        cached: List[str] = []
        try:
            cached = await self.prepare()
            self.emit("execution_cached", {"nodes": cached, "timestamp": _now_ms()}, record=True)
            await self.loop()
        except Interrupted:
            status = "interrupted"
            self.cancel_tasks()
            current = self.progress.running_node()
            self.emit("execution_interrupted", {
                "node_id": current, "node_type": self.spec_of(current).name if current else None,
                "executed": list(self.executed), "timestamp": _now_ms()}, record=True)
        except NodeFailure as failure:
            status, error = "error", self.failure_event(failure)
            self.cancel_tasks()
            self.emit("execution_error", error, record=True)
        except ExpansionError as exc:
            status = "error"
            self.cancel_tasks()
            culprit = self.progress.running_node() or (self.executed[-1] if self.executed else "")
            error = self.failure_event(NodeFailure(culprit, self.spec_of(culprit).name if culprit else "",
                                                   exc, tb=[]))
            self.emit("execution_error", error, record=True)
        except Exception as exc:  # an engine bug: still a clean job failure, never a lost worker
            status = "error"
            self.cancel_tasks()
            error = self.failure_event(NodeFailure("", "", exc))
            self.emit("execution_error", error, record=True)
        finally:
            self.cache.end_job(self.used_keys)
            live = self.graph.all_node_ids()
            for key in [k for k in self.executor.instances if k[0] not in live]:
                del self.executor.instances[key]
        if status == "success":
            self.emit("execution_success", {"timestamp": _now_ms()}, record=True)
        meta = {node_id: {"node_id": node_id, "display_node": self.graph.get_display_node_id(node_id),
                          "parent_node": self.graph.get_parent_node_id(node_id),
                          "real_node_id": self.graph.get_real_node_id(node_id)} for node_id in self.ui_outputs}
        return JobOutcome(status, dict(self.ui_outputs), self.messages, error, list(self.executed), cached,
                          time.perf_counter() - started, meta)

    def failure_event(self, failure: NodeFailure) -> dict:
        exc = failure.exc.__cause__ if isinstance(failure.exc, NodeFailure) else failure.exc
        node_id = failure.node_id
        return {
            "prompt_id": self.prompt_id,
            "node_id": self.graph.get_display_node_id(node_id) if node_id else None,
            "real_node_id": node_id or None,
            "node_type": failure.class_type,
            "executed": list(self.executed),
            "exception_message": str(exc),
            "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            "traceback": failure.tb,
            "current_inputs": describe_inputs(failure.inputs),
            "current_outputs": list(self.results),
            "timestamp": _now_ms(),
        }

    def cancel_tasks(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
