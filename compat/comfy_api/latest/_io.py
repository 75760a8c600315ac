"""`comfy_api.latest.io`: ComfyUI's V3 node schema, as packs write it.

A V3 node is a class with classmethods: `define_schema()` returns a `Schema` (node id, category, a list of
`io.X.Input(...)` and `io.X.Output(...)`, flags), `execute(**inputs)` returns a `NodeOutput`. Each socket kind is a
class (`io.Image`, `io.Int`, `io.Custom("MY_TYPE")`) whose nested `Input` / `Output` classes describe one socket;
`io.Int.Input("steps", default=20, min=1)` is the V3 spelling of `("INT", {"default": 20, "min": 1})`.

This module holds the declarations only: each input knows its V1 form (`v1_entry()`), and a Schema turns into the
V1 `INPUT_TYPES` / `RETURN_TYPES` view ComfyUI gives V3 classes. How a V3 class runs in our engine (dynamic
inputs expanded per node, hidden values, NodeOutput) is compat/v3_adapter.py.
"""
from __future__ import annotations

from comfy_api.latest._io_dynamic import *  # noqa: F401,F403
from comfy_api.latest._io_dynamic import DynamicInput, DynamicOutput, _v1_inputs  # noqa: F401
from comfy_api.latest._io_node import *  # noqa: F401,F403
from comfy_api.latest._io_node import _UIOutput, overrides  # noqa: F401
from comfy_api.latest._io_sockets import *  # noqa: F401,F403
from comfy_api.latest._io_sockets import Input, Output, WidgetInput, _ComfyType, _IO_V3  # noqa: F401
