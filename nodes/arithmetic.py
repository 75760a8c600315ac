"""Small value nodes: integer and float math, comparisons, and string operations."""
from __future__ import annotations

import math
import operator

from nodes.declare import Boolean, Combo, Float, Int, Output, Socket, String, node

CATEGORY = "utils/math"

_INT_OPS = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "divide": lambda a, b: _checked_div(a, b, operator.floordiv), "modulo": lambda a, b: _checked_div(a, b, operator.mod),
    "power": lambda a, b: a ** b if b >= 0 else _raise("power: negative exponents give no integer"),
    "min": min, "max": max,
}
_FLOAT_OPS = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul,
    "divide": lambda a, b: _checked_div(a, b, operator.truediv), "power": math.pow, "min": min, "max": max,
}
_COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
                ">=": operator.ge}


def _raise(message):
    raise ValueError(message)


def _checked_div(a, b, op):
    if b == 0:
        raise ZeroDivisionError("division by zero: input 'b' is 0")
    return op(a, b)


@node(category=CATEGORY, display_name="Int Math", outputs=[Output("INT", tooltip="a <operation> b")])
class IntMath:
    """Integer arithmetic on two inputs (division rounds down)."""
    a = Int(0, tooltip="Left operand.")
    b = Int(0, tooltip="Right operand.")
    operation = Combo(list(_INT_OPS), tooltip="The operation to apply.")

    def run(self, ctx, a, b, operation):
        return (int(_INT_OPS[operation](a, b)),)


@node(category=CATEGORY, display_name="Float Math", outputs=[Output("FLOAT", tooltip="a <operation> b")])
class FloatMath:
    """Floating-point arithmetic on two inputs."""
    a = Float(0.0, tooltip="Left operand.")
    b = Float(0.0, tooltip="Right operand.")
    operation = Combo(list(_FLOAT_OPS), tooltip="The operation to apply.")

    def run(self, ctx, a, b, operation):
        return (float(_FLOAT_OPS[operation](a, b)),)


@node(category=CATEGORY, display_name="Compare", outputs=[Output("BOOLEAN", tooltip="Whether a <comparison> b.")])
class Compare:
    """Compare two numbers or strings."""
    a = Socket("INT,FLOAT,STRING", tooltip="Left value.")
    b = Socket("INT,FLOAT,STRING", tooltip="Right value.")
    comparison = Combo(list(_COMPARISONS), tooltip="How to compare.")

    def run(self, ctx, a, b, comparison):
        try:
            return (bool(_COMPARISONS[comparison](a, b)),)
        except TypeError:
            raise TypeError(f"cannot compare {type(a).__name__} with {type(b).__name__} using {comparison}")


@node(category=CATEGORY, display_name="Int to Float", outputs=[Output("FLOAT", tooltip="The same number as a float.")])
class IntToFloat:
    """Convert an integer to a float."""
    value = Int(0, tooltip="The integer to convert.")

    def run(self, ctx, value):
        return (float(value),)


@node(category=CATEGORY, display_name="Float to Int", outputs=[Output("INT", tooltip="The integer, rounded as chosen.")])
class FloatToInt:
    """Convert a float to an integer."""
    value = Float(0.0, tooltip="The number to convert.")
    rounding = Combo(["round", "floor", "ceil", "truncate"], tooltip="How to drop the fraction.")

    def run(self, ctx, value, rounding):
        fn = {"round": round, "floor": math.floor, "ceil": math.ceil, "truncate": math.trunc}[rounding]
        return (int(fn(value)),)


@node(category="utils/string", display_name="Concatenate", outputs=[Output("STRING", tooltip="The joined text.")])
class StringConcatenate:
    """Join two strings with a delimiter."""
    string_a = String("", multiline=True, tooltip="First string.")
    string_b = String("", multiline=True, tooltip="Second string.")
    delimiter = String("", tooltip="Placed between the two strings.")

    def run(self, ctx, string_a, string_b, delimiter=""):
        return (f"{string_a}{delimiter}{string_b}",)


@node(category="utils/string", display_name="Length", outputs=[Output("INT", tooltip="The number of characters.")])
class StringLength:
    """The number of characters in a string."""
    string = String("", multiline=True, tooltip="The string to measure.")

    def run(self, ctx, string):
        return (len(string),)


@node(category="utils/string", display_name="Format Number", outputs=[Output("STRING", tooltip="The formatted number.")])
class NumberToString:
    """Format a number as text."""
    value = Socket("INT,FLOAT", tooltip="The number to format.")
    decimals = Int(-1, min=-1, max=20, tooltip="Digits after the point; -1 keeps Python's shortest form.")

    def run(self, ctx, value, decimals=-1):
        return (str(value) if decimals < 0 else f"{value:.{decimals}f}",)


@node(category="utils/logic", display_name="Boolean Logic", outputs=[Output("BOOLEAN", tooltip="The result of the operation.")])
class BooleanLogic:
    """Combine two booleans."""
    a = Boolean(False, tooltip="Left value.")
    b = Boolean(False, tooltip="Right value.")
    operation = Combo(["and", "or", "xor", "nand", "nor"], tooltip="The logic operation.")

    def run(self, ctx, a, b, operation):
        result = {"and": a and b, "or": a or b, "xor": a != b, "nand": not (a and b), "nor": not (a or b)}
        return (bool(result[operation]),)


NODES = [IntMath, FloatMath, Compare, IntToFloat, FloatToInt, StringConcatenate, StringLength, NumberToString,
         BooleanLogic]
