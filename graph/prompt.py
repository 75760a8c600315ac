"""API-format prompts: `{node_id: {"class_type": str, "inputs": {name: literal | [src_id, slot]}}}`.

A two-element list `[node_id, output_slot]` is a link; a literal list travels wrapped as `{"__value__": [...]}`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple


def is_link(value: Any) -> bool:
    """A well-formed link: `[node_id, slot]` with a string (or integer) id and an integer slot."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and isinstance(value[0], (str, int)) and not isinstance(value[0], bool)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def link_parts(value: Any) -> Optional[Tuple[str, int]]:
    """`(source_id, slot)` for a well-formed link, else None. Integer ids are accepted and made strings."""
    if is_link(value):
        return str(value[0]), value[1]
    return None


def unwrap_literal(value: Any) -> Any:
    """`{"__value__": x}` -> x; anything else unchanged."""
    if isinstance(value, dict) and len(value) == 1 and "__value__" in value:
        return value["__value__"]
    return value
