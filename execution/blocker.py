"""ExecutionBlocker: a value that stops its consumers from running.

A node returns it in place of an output (or as its whole return value). Any node that receives it on an input is not
called for that list item; the blocker flows on to its own outputs. An output node that receives a blocker carrying
a message fails with that message; a blocker with `message=None` blocks silently.
"""
from __future__ import annotations

from typing import Optional


class ExecutionBlocker:
    __slots__ = ("message",)

    def __init__(self, message: Optional[str]):
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"
