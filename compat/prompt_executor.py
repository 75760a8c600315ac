"""`execution.PromptExecutor` for packs (our own package is also `execution`; compat.install gives it a module
`__getattr__` that serves this name): run a prompt in-process the way ComfyUI's executor class does.

`execute(prompt, prompt_id, extra_data, execute_outputs)` validates and runs through the engine's Executor (its own
output cache, kept across calls until `reset()`), leaving `success`, `status_messages` and `history_result` as
ComfyUI's class does; events go to the PromptServer's client when there is one.
"""
from __future__ import annotations

import uuid
from typing import Any, List, Optional

from compat import _runtime
from execution.caches import ClassicCache
from execution.events import EventSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt


class _ForwardingSink(EventSink):
    def __init__(self, owner: "PromptExecutor") -> None:
        self.owner = owner

    def send(self, event: str, data: dict) -> None:
        self.owner.add_message(event, data, broadcast=False)


class PromptExecutor:
    def __init__(self, server: Any = None, cache_type: Any = False, cache_args: Optional[dict] = None) -> None:
        self.server = server
        self.cache_type, self.cache_args = cache_type, cache_args
        self.reset()

    def reset(self) -> None:
        """Forget the cache and the last run's results."""
        self._executor = Executor(_runtime.catalogue(), ClassicCache(), _runtime.state.services)
        self.success = True
        self.status_messages: List[tuple] = []
        self.history_result: dict = {}

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        """Record an event for the history and tell the server's client (everyone when `broadcast`)."""
        self.status_messages.append((event, data))
        server = self.server
        if server is not None and (broadcast or getattr(server, "client_id", None) is not None):
            server.send_sync(event, data, getattr(server, "client_id", None))

    def handle_execution_error(self, prompt_id: str, prompt: dict, current_outputs: Any, executed: Any,
                               error: dict, ex: BaseException) -> None:
        """Report a failed node as `execution_error` (or `execution_interrupted`), as ComfyUI's class does."""
        node_id = error.get("node_id")
        class_type = prompt.get(node_id, {}).get("class_type") if node_id is not None else None
        base = {"prompt_id": prompt_id, "node_id": node_id, "node_type": class_type,
                "executed": list(executed or ())}
        if type(ex).__name__ in ("InterruptProcessingException", "Interrupted"):
            self.add_message("execution_interrupted", base, broadcast=True)
            return
        self.add_message("execution_error", {
            **base, "exception_message": error.get("exception_message", str(ex)),
            "exception_type": error.get("exception_type", type(ex).__name__),
            "traceback": error.get("traceback", []), "current_inputs": error.get("current_inputs", {}),
            "current_outputs": list(current_outputs or ())}, broadcast=False)

    def execute(self, prompt: dict, prompt_id: Optional[str] = None, extra_data: Optional[dict] = None,
                execute_outputs: Optional[list] = None) -> None:
        prompt_id = prompt_id or str(uuid.uuid4())
        self.status_messages = []
        checked = validate_prompt(prompt, self._executor.catalogue, execute_outputs or None,
                                  _runtime.state.services)
        if not checked.ok:
            self.success = False
            self.add_message("execution_error", {"prompt_id": prompt_id, "exception_message": str(checked.error),
                                                 "node_errors": checked.node_errors}, broadcast=False)
            return
        job = Job(prompt_id, checked.prompt, checked.outputs, dict(extra_data or {}), checked.order)
        outcome = self._executor.execute_sync(job, _ForwardingSink(self))
        self.success = outcome.status == "success"
        self.history_result = {"outputs": outcome.outputs, "meta": outcome.meta}


def package_getattr(name: str) -> Any:
    """The module `__getattr__` compat installs on our `execution` package."""
    if name == "PromptExecutor":
        return PromptExecutor
    raise AttributeError(f"module 'execution' has no attribute {name!r}")
