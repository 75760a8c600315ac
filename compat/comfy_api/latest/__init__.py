"""`comfy_api.latest`: the API ComfyUI offers packs -- the V3 node schema (`io`, `ui`), extensions
(`ComfyExtension`, found through a pack's `comfy_entrypoint`), and ComfyAPI / ComfyAPISync at run time: progress.

`set_progress` reports for the running node through its NodeContext (or for another node of the same job when
`node_id` names one), so it produces the same `progress` events, previews and interrupt checks as the engine's own
nodes. Both forms work from sync and async nodes: the context is a context variable, which asyncio tasks inherit.
Outside node execution there is no job to report to, and the call does nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from comfy_api.latest import _io as io
from comfy_api.latest import _ui as ui
from comfy_api.latest._video import VideoCodec, VideoComponents, VideoContainer, VideoFromComponents, VideoInput
from compat import _report

IO = io
UI = ui


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


class ComfyExtension:
    """What a pack's `async def comfy_entrypoint()` returns: `on_load` runs once, then `get_node_list` names the
    V3 node classes to register."""

    async def on_load(self) -> None:
        pass

    async def get_node_list(self) -> list:
        raise NotImplementedError


class Input:
    """The value types nodes receive, for annotations and isinstance checks."""
    Image = torch.Tensor
    Mask = torch.Tensor
    Latent = dict
    Audio = dict
    Video = VideoInput


class InputImpl:
    VideoFromComponents = VideoFromComponents


class Types:
    VideoCodec = VideoCodec
    VideoContainer = VideoContainer
    VideoComponents = VideoComponents


__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyAPI_latest", "ComfyExtension", "Input", "InputImpl", "Types", "io",
           "IO", "ui", "UI"]
