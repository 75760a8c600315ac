"""A safe arithmetic expression evaluator for ComfyMathExpression: Python's expression syntax restricted to
numbers, named values, arithmetic, comparisons, boolean logic, conditional expressions, indexing into lists and
calls of a fixed set of math functions. Nothing else is evaluated (no attributes, no imports, no comprehensions,
no other names), so a workflow's expression can never reach the interpreter; powers are capped so that an
expression cannot make the server compute a number of millions of digits.
"""
from __future__ import annotations

import ast
import math
import operator
from typing import Any, Dict

MAX_EXPONENT = 4_000_000
MAX_LENGTH = 10_000  # characters of an expression


def _checked_pow(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} exceeds the maximum allowed ({MAX_EXPONENT})")
    return operator.pow(base, exponent)


def _sum(*args: Any) -> Any:
    """sum(a, b, c) or sum(values)."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return sum(args[0])
    return sum(args)


FUNCTIONS = {"sum": _sum, "min": min, "max": max, "abs": abs, "round": round, "pow": _checked_pow,
             "sqrt": math.sqrt, "ceil": math.ceil, "floor": math.floor, "log": math.log, "log2": math.log2,
             "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan, "int": int, "float": float}
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _checked_pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
           ast.GtE: operator.ge}


def evaluate(expression: str, names: Dict[str, Any]) -> Any:
    """The value of `expression` with `names` bound; ValueError naming what is not allowed or what failed."""
    if len(expression) > MAX_LENGTH:
        raise ValueError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"invalid expression {expression!r}: {exc.msg}") from None
    try:
        return _eval(tree.body, names)
    except ZeroDivisionError:
        raise ValueError(f"division by zero in {expression!r}") from None
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"cannot evaluate {expression!r}: {exc}") from None


def _eval(node: ast.AST, names: Dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, bool)):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        raise ValueError(f"unknown name {node.id!r} (inputs are named a, b, c, ...; `values` lists them)")
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](_eval(node.left, names), _eval(node.right, names))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](_eval(node.operand, names))
    if isinstance(node, ast.Compare) and all(type(op) in COMPARE for op in node.ops):
        left = _eval(node.left, names)
        for op, right_node in zip(node.ops, node.comparators):
            right = _eval(right_node, names)
            if not COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, names) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.IfExp):
        return _eval(node.body, names) if _eval(node.test, names) else _eval(node.orelse, names)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, names)[_eval(node.slice, names)]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(item, names) for item in node.elts]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        function = FUNCTIONS.get(node.func.id)
        if function is None:
            raise ValueError(f"unknown function {node.func.id!r} (known: {', '.join(FUNCTIONS)})")
        return function(*[_eval(arg, names) for arg in node.args])
    raise ValueError(f"not allowed in an expression: {ast.unparse(node)!r}")
