"""`comfy_api.latest`: ComfyAPI (async) and ComfyAPISync, as far as node packs use them at run time: progress.

`set_progress` reports for the running node through its NodeContext (or for another node of the same job when
`node_id` names one), so it produces the same `progress` events, previews and interrupt checks as the engine's own
nodes. Both forms work from sync and async nodes: the context is a context variable, which asyncio tasks inherit.
Outside node execution there is no job to report to, and the call does nothing.
"""
from __future__ import annotations

from typing import Any, Optional

from compat import _report


def _set_progress(value: float, max_value: float, node_id: Optional[str], preview_image: Any) -> None:
    _report.report(value, max_value, node_id, preview_image)


class _ExecutionSync:
    def set_progress(self, value: float, max_value: float, node_id: Optional[str] = None,
                     preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        """Report `value` of `max_value` (and optionally a PIL image or IMAGE tensor preview)."""
        _set_progress(value, max_value, node_id, preview_image)


class _ExecutionAsync:
    async def set_progress(self, value: float, max_value: float, node_id: Optional[str] = None,
                           preview_image: Any = None, ignore_size_limit: bool = False) -> None:
        """Report `value` of `max_value` (and optionally a PIL image or IMAGE tensor preview)."""
        _set_progress(value, max_value, node_id, preview_image)


class ComfyAPI:
    """`await ComfyAPI().execution.set_progress(value, max_value)`."""
    VERSION = "latest"

    def __init__(self) -> None:
        self.execution = _ExecutionAsync()


class ComfyAPISync:
    """`ComfyAPISync().execution.set_progress(value, max_value)`."""
    VERSION = "latest"

    def __init__(self) -> None:
        self.execution = _ExecutionSync()


ComfyAPI_latest = ComfyAPI

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyAPI_latest"]
