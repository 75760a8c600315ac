"""Primitive value nodes: a typed constant the editor shows as one widget, linkable into any matching input."""
from __future__ import annotations

from nodes.declare import Boolean, Float, Int, Output, String, node

CATEGORY = "utils/primitive"


@node(category=CATEGORY, display_name="Int", outputs=[Output("INT", tooltip="The value.")])
class PrimitiveInt:
    """A constant integer."""
    value = Int(0, tooltip="The integer to output.", control_after_generate=True)

    def run(self, ctx, value):
        return (value,)


@node(category=CATEGORY, display_name="Float", outputs=[Output("FLOAT", tooltip="The value.")])
class PrimitiveFloat:
    """A constant floating-point number."""
    value = Float(0.0, tooltip="The number to output.")

    def run(self, ctx, value):
        return (value,)


@node(category=CATEGORY, display_name="String", outputs=[Output("STRING", tooltip="The text.")])
class PrimitiveString:
    """A constant single-line string."""
    value = String("", tooltip="The text to output.")

    def run(self, ctx, value):
        return (value,)


@node(category=CATEGORY, display_name="String (Multiline)", outputs=[Output("STRING", tooltip="The text.")])
class PrimitiveStringMultiline:
    """A constant multi-line string."""
    value = String("", multiline=True, tooltip="The text to output.")

    def run(self, ctx, value):
        return (value,)


@node(category=CATEGORY, display_name="Boolean", outputs=[Output("BOOLEAN", tooltip="The value.")])
class PrimitiveBoolean:
    """A constant true/false value."""
    value = Boolean(False, tooltip="The value to output.")

    def run(self, ctx, value):
        return (value,)


NODES = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean]
