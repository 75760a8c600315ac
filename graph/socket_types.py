"""Which output types may feed which input types.

Types are strings: a plain name ("IMAGE"), the wildcard "*", or a comma union ("INT,FLOAT"). Node packs also use
`str` subclasses whose `__ne__` always answers False to mean "any type"; comparing with `!=` first honours them.
A V3 match-type socket (COMFY_MATCHTYPE_V3) takes its type from what is linked to it, which only the editor tracks,
so on either end it is accepted, as ComfyUI does; so is a list of choices (an output typed as its options) into a
COMBO input.
"""
from __future__ import annotations

from typing import Any

MATCH_TYPE = "COMFY_MATCHTYPE_V3"


def _parts(type_name: str) -> set:
    return {part.strip() for part in type_name.split(",")}


def types_compatible(received: Any, expected: Any, strict: bool = False) -> bool:
    """True when an output of type `received` may be linked to an input of type `expected`.

    Non-strict (the default, used for validation): a union matches when any member matches.
    Strict: every received member must be accepted by the input.
    """
    if not received != expected:  # `not !=` lets custom __ne__ ("any" types) decide
        return True
    if received == MATCH_TYPE or expected == MATCH_TYPE:
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got, want = _parts(received), _parts(expected)
    if "*" in got or "*" in want:
        return True
    if strict:
        return got <= want
    return bool(got & want)
