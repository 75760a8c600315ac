"""PreviewAny: show any value as text on its node (an output node that works with every type)."""
from __future__ import annotations

import json

from nodes.declare import Socket, node


def as_text(value) -> str:
    if isinstance(value, str):
        return value
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {list(shape)} ({getattr(value, 'dtype', '')})"
    try:
        return json.dumps(value, indent=2, default=repr)
    except (TypeError, ValueError):
        return repr(value)


@node(category="utils", display_name="Preview as Text", output_node=True)
class PreviewAny:
    """Show any value as text on the node."""
    source = Socket("*", tooltip="The value to show.")

    def run(self, ctx, source):
        return {"ui": {"text": [as_text(source)]}, "result": ()}


NODES = [PreviewAny]
