"""`comfy_execution.graph`: ExecutionBlocker and DynamicPrompt (the engine's own classes) and small helpers."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from execution.blocker import ExecutionBlocker
from execution.dynamic_graph import DynamicPrompt, NodeNotFoundError

__all__ = ["ExecutionBlocker", "DynamicPrompt", "get_input_info", "DependencyCycleError", "NodeInputError",
           "NodeNotFoundError"]


class DependencyCycleError(Exception):
    """Raised by ComfyUI's own scheduler for a cycle; packs import it to catch it."""


class NodeInputError(Exception):
    """Raised by ComfyUI's own scheduler for a bad input; packs import it to catch it."""


def get_input_info(class_def: type, input_name: str,
                   valid_inputs: Optional[dict] = None) -> Tuple[Any, Optional[str], Optional[dict]]:
    """(type, section, options) of a V1 class's input; (None, None, None) when it does not declare it."""
    valid_inputs = valid_inputs if valid_inputs is not None else class_def.INPUT_TYPES()
    for section in ("required", "optional", "hidden"):
        entries = valid_inputs.get(section) or {}
        if input_name in entries:
            raw = entries[input_name]
            if section == "hidden" or not isinstance(raw, (list, tuple)):
                return raw, section, None
            options = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else None
            kind = "COMBO" if isinstance(raw[0], (list, tuple)) else raw[0]
            return kind, section, options
    return None, None, None
