"""Which pending job an idle worker takes: model and cache affinity first, spreading only when a queue backs up.

The front keeps the queue; a worker that falls idle asks for work (pull), so "the least-loaded worker" is always the
one asking. What a job needs is read from its prompt: the model files its inputs name, and the cache keys of its
nodes (the same keys the scheduler computes, without IS_CHANGED fingerprints, so nodes that define one simply match
less). A worker holds files (its residency reports them after each job) and cached outputs (their keys).

The rule, for the idle worker W and the pending jobs in queue order:
- a job that W holds at least as well as every other worker does is W's (holds its models / its cached outputs);
- a job nobody holds goes to W (least loaded);
- a job whose models a busy worker holds (more of them than W) waits for it, unless `spread_after` or more pending
  jobs are already waiting for that worker: then W takes the earliest of them and loads its models too (a long
  queue is worth a second copy); cached outputs alone are never worth a wait (a busy worker holding only more
  of them loses the job to W: an empty latent cached everywhere must not pull every job to one worker);
- a job that another idle worker holds better is left for that worker;
- with `keep_client_order` (--keep-client-order), a client's jobs start in queue order (numbering as the store
  gives it, `front` jobs first): a job never starts while an earlier pending job of its client waits.
Everything here is pure (no Ray, no I/O), so the policy is tested on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, Optional, Sequence, Tuple

from execution.cache_keys import KeyComputer

MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")


def job_files(prompt: Dict[str, dict]) -> FrozenSet[str]:
    """The model files a prompt names: every literal string input that ends in a model file extension, with
    forward slashes (a file in a subfolder is named `sub/name.safetensors`, as the loaders' choices list it)."""
    names = set()
    for node in prompt.values():
        for value in (node.get("inputs") or {}).values():
            if isinstance(value, str) and value.lower().endswith(MODEL_EXTENSIONS):
                names.add(value.replace("\\", "/"))
    return frozenset(names)


class _PromptGraph:
    """The two questions KeyComputer asks of a graph, answered by a bare API-format prompt."""

    def __init__(self, prompt: Dict[str, dict]) -> None:
        self.prompt = prompt

    def get_node(self, node_id: str) -> dict:
        node = self.prompt[node_id]
        return {"class_type": node.get("class_type"), "inputs": node.get("inputs") or {}}

    def has_node(self, node_id: str) -> bool:
        return node_id in self.prompt


def job_keys(prompt: Dict[str, dict], catalogue: Any) -> FrozenSet[str]:
    """The cache keys of a prompt's nodes (links to missing nodes just stay literal text)."""
    computer = KeyComputer(_PromptGraph(prompt), catalogue)
    keys = set()
    for node_id, node in prompt.items():
        if isinstance(node, dict) and isinstance(node.get("class_type"), str):
            keys.add(computer.key(node_id))
    return frozenset(keys)


@dataclass(frozen=True)
class PendingJob:
    prompt_id: str
    files: FrozenSet[str] = frozenset()
    keys: FrozenSet[str] = frozenset()
    client: Optional[str] = None  # the client_id it was posted with


@dataclass(frozen=True)
class WorkerView:
    name: str
    busy: bool = False
    files: FrozenSet[str] = frozenset()  # model files it holds (or is loading for its running job)
    keys: FrozenSet[str] = frozenset()  # cache keys of the outputs it holds


@dataclass(frozen=True)
class Route:
    """A decision, as the job's history entry records it."""
    prompt_id: str
    worker: str
    reason: str
    detail: Dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict:
        return {"worker": self.worker, "reason": self.reason, **self.detail}


def affinity(worker: WorkerView, job: PendingJob) -> Tuple[int, int]:
    """(model files of the job it holds, cached node outputs of the job it holds): compared as a pair."""
    return len(job.files & worker.files), len(job.keys & worker.keys)


def _route_here(idle: WorkerView, job: PendingJob, mine: Tuple[int, int]) -> Route:
    if mine == (0, 0):
        return Route(job.prompt_id, idle.name, "least loaded")
    return Route(job.prompt_id, idle.name, "holds models" if mine[0] else "holds cached outputs",
                 {"files": sorted(job.files & idle.files), "cached_nodes": mine[1]})


def pick_job(idle: WorkerView, pending: Sequence[PendingJob], workers: Sequence[WorkerView],
             spread_after: int = 3, keep_client_order: bool = False) -> Optional[Route]:
    """The job `idle` should take now, with why; None when every pending job is better left for another worker.

    With `keep_client_order`, a job never starts before an earlier pending job of the same client (`client` None
    counts as one client): routing then reorders only across clients."""
    others = [w for w in workers if w.name != idle.name]
    waiting_for: Dict[str, list] = {}  # holder -> pending jobs so far that wait for it, (job, startable)
    held_back = set()  # clients with an earlier pending job that is not starting now
    for job in pending:
        startable = not (keep_client_order and job.client in held_back)
        held_back.add(job.client)  # whatever happens below, a later job of this client is not first any more
        mine = affinity(idle, job)
        scored = [(affinity(w, job), w) for w in others]
        best = max((score for score, _ in scored), default=(0, 0))
        if mine >= best:
            if startable:
                return _route_here(idle, job, mine)
            continue
        leaders = [w for score, w in scored if score == best]
        if any(not w.busy for w in leaders):
            continue  # an idle worker that holds it better will take it
        if best[0] == mine[0]:  # the busy holders have only more cached outputs, no more models: not worth a wait
            if startable:
                return _route_here(idle, job, mine)
            continue
        holder = leaders[0]
        queue = waiting_for.setdefault(holder.name, [])
        queue.append((job, startable))
        if len(queue) > spread_after:
            first = next((j for j, ok in queue if ok), None)  # the earliest waiting job that may start
            if first is not None:
                return Route(first.prompt_id, idle.name, "spread",
                             {"held_by": holder.name, "waiting": len(queue) - 1})
    return None
