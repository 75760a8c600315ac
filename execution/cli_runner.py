"""The headless runner: `python server.py --run WORKFLOW.json [--set NODE.INPUT=VALUE ...]`.

Runs one API- or UI-format workflow without HTTP: validates it, shows a terminal progress bar, prints the files it
wrote, and exits non-zero on any failure (with the node and the reason).
"""
from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, Callable, Optional, TextIO

from execution.events import EventSink
from execution.scheduler import Executor, Job
from graph.ui_format import WorkflowConversionError, is_ui_workflow, ui_to_api
from graph.validation import validate_prompt


class CliError(Exception):
    pass


class TerminalProgress(EventSink):
    """A one-line progress bar per node on a terminal; when the stream is not a terminal (a log file, a pipe), a
    plain line per progress step with the elapsed time, so a long run is never silent."""

    def __init__(self, prompt: dict, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.prompt = prompt
        self.stream = stream
        self.width = width
        self.tty = stream.isatty()
        self.node: Optional[str] = None
        self.errors: list = []
        self.started = time.perf_counter()
        self.node_started = self.started

    def _label(self, node_id: str) -> str:
        node = self.prompt.get(node_id) or {}
        return f"#{node_id} {node.get('class_type', '')}".strip()

    def _end_line(self) -> None:
        if self.tty and self.node is not None:
            self.stream.write("\n")

    def send(self, event: str, data: dict) -> None:
        if event == "executing" and data.get("node") is not None:
            self._end_line()
            self.node = data["node"]
            self.node_started = time.perf_counter()
            self.stream.write(f"{self._label(self.node)}" + ("" if self.tty else "\n"))
        elif event == "progress":
            value, total = data.get("value", 0), data.get("max", 1) or 1
            filled = int(self.width * min(1.0, value / total))
            bar = "#" * filled + "." * (self.width - filled)
            line = f"{self._label(data.get('node', ''))} [{bar}] {value}/{total}"
            if self.tty:
                self.stream.write("\r" + line)
            else:
                elapsed = time.perf_counter() - self.node_started
                rate = f", {elapsed / value:.2f} s/step" if value else ""
                self.stream.write(f"{self._label(data.get('node', ''))} step {value}/{total} ({elapsed:.1f} s{rate})\n")
        elif event == "execution_error":
            self.errors.append(data)
        elif event == "execution_cached" and data.get("nodes"):
            self.stream.write(f"cached: {len(data['nodes'])} node(s)\n")
        self.stream.flush()

    def close(self) -> None:
        self._end_line()
        self.node = None


def parse_set(assignment: str) -> tuple:
    """`NODE.INPUT=VALUE` -> (node, input, value); the value is JSON when it parses, else the raw string."""
    target, sep, raw = assignment.partition("=")
    node_id, dot, input_name = target.partition(".")
    if not sep or not dot or not node_id or not input_name:
        raise CliError(f"--set {assignment!r}: expected NODE.INPUT=VALUE (for example 3.seed=42)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node_id, input_name, value


def load_workflow(path: str, catalogue: Any, services: Any) -> tuple:
    """(API prompt, extra_pnginfo) from a workflow file in either format."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}")
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and "class_type" not in data.get(
            "prompt", {}):
        data = data["prompt"]  # a saved POST /prompt body
    if is_ui_workflow(data):
        try:
            return ui_to_api(data, catalogue, services), {"workflow": data}
        except WorkflowConversionError as exc:
            raise CliError(f"{path}: {exc}")
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a workflow object (API or UI format)")
    return data, {}


def apply_sets(prompt: dict, assignments: list) -> None:
    for assignment in assignments:
        node_id, input_name, value = parse_set(assignment)
        node = prompt.get(node_id)
        if not isinstance(node, dict):
            raise CliError(f"--set {assignment!r}: the workflow has no node {node_id!r} "
                           f"(node ids: {', '.join(sorted(prompt)[:20])})")
        node.setdefault("inputs", {})[input_name] = value


def output_files(outputs: dict, services: Any) -> list:
    files = []
    for ui in outputs.values():
        for item in (ui.get("images", []) + ui.get("files", []) if isinstance(ui, dict) else []):
            if isinstance(item, dict) and "filename" in item:
                root = services.paths.directory_for(item.get("type", "output"))
                files.append(os.path.join(root, item.get("subfolder", ""), item["filename"]))
    return files


def run_workflow_file(args: Any, services: Any, load_catalogue: Callable[[Any, Any], tuple],
                      out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        catalogue, packs = load_catalogue(args, services)
        prompt, pnginfo = load_workflow(args.run, catalogue, services)
        apply_sets(prompt, args.set)
        checked = validate_prompt(prompt, catalogue, None, services)
        if not checked.ok:
            lines = [f"error: the workflow is not valid: {checked.error['message']}"]
            for node_id, entry in checked.node_errors.items():
                for e in entry["errors"]:
                    where = e.get("extra_info", {}).get("input_name")
                    lines.append(f"  node #{node_id} ({entry['class_type']})"
                                 f"{' input ' + repr(where) if where else ''}: {e['message']} {e['details']}")
            if not checked.node_errors and checked.error.get("details"):
                lines.append(f"  {checked.error['details']}")
            raise CliError("\n".join(lines))
        progress = TerminalProgress(checked.prompt, err)
        executor = Executor(catalogue, services=services)
        job = Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {"extra_pnginfo": pnginfo}, checked.order)
        outcome = executor.execute_sync(job, progress)
        progress.close()
    except CliError as exc:
        message = str(exc)
        err.write(message if message.startswith("error:") else f"error: {message}")
        err.write("\n")
        return 1
    if outcome.status != "success":
        error = outcome.error or {}
        err.write(f"error: the job {outcome.status}")
        if error:
            err.write(f" in node #{error.get('node_id')} ({error.get('node_type')}): "
                      f"{error.get('exception_type')}: {error.get('exception_message')}")
        err.write("\n")
        return 1
    for path in output_files(outcome.outputs, services):
        out.write(path + "\n")
    for node_id, ui in outcome.outputs.items():
        for text in (ui.get("text", []) if isinstance(ui, dict) else []):
            out.write(f"#{node_id}: {text}\n")
    err.write(f"done in {outcome.seconds:.2f}s\n")
    return 0
