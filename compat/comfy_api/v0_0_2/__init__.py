"""`comfy_api.v0_0_2`: the pinned API version packs may ask for; the same objects as `comfy_api.latest`."""
from __future__ import annotations

from comfy_api.latest import (IO, UI, ComfyAPI, ComfyAPISync, ComfyExtension, Input, InputImpl, Types, io,  # noqa: F401
                              ui)

ComfyAPI_v0_0_2 = ComfyAPI

__all__ = ["ComfyAPI", "ComfyAPISync", "ComfyExtension", "Input", "InputImpl", "Types", "io", "IO", "ui", "UI"]
