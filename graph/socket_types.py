"""Which output types may feed which input types.

Types are strings: a plain name ("IMAGE"), the wildcard "*", or a comma union ("INT,FLOAT"). Node packs also use
`str` subclasses whose `__ne__` always answers False to mean "any type"; comparing with `!=` first honours them.
"""
from __future__ import annotations

from typing import Any


def _parts(type_name: str) -> set:
    return {part.strip() for part in type_name.split(",")}


def types_compatible(received: Any, expected: Any, strict: bool = False) -> bool:
    """True when an output of type `received` may be linked to an input of type `expected`.

    Non-strict (the default, used for validation): a union matches when any member matches.
    Strict: every received member must be accepted by the input.
    """
    if not received != expected:  # `not !=` lets custom __ne__ ("any" types) decide
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got, want = _parts(received), _parts(expected)
    if "*" in got or "*" in want:
        return True
    if strict:
        return got <= want
    return bool(got & want)
