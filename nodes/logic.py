"""Control flow on values: route one of two inputs, evaluating only the branch that is used."""
from __future__ import annotations

from nodes.declare import Boolean, Output, Socket, node

_MISSING = object()  # an input that is not connected at all (a connected, not yet evaluated one arrives as None)


@node(category="logic", display_name="Switch", experimental=True,
      outputs=[Output("*", "output", tooltip="The input the switch selects.")])
class ComfySwitchNode:
    """Pass on_true when the switch is on, else on_false; only that branch is computed. With one of them left
    unconnected, the other is passed whatever the switch says."""
    switch = Boolean(False, tooltip="Which input to pass: on_true when on, on_false when off.")
    on_false = Socket("*", lazy=True, optional=True, tooltip="Passed when the switch is off.")
    on_true = Socket("*", lazy=True, optional=True, tooltip="Passed when the switch is on.")

    def lazy_needs(self, ctx, switch, on_false=_MISSING, on_true=_MISSING):
        wanted = self._pick(switch, on_false is not _MISSING, on_true is not _MISSING)
        value = on_true if wanted == "on_true" else on_false
        return [wanted] if wanted and value is None else []

    def run(self, ctx, switch, on_false=_MISSING, on_true=_MISSING):
        wanted = self._pick(switch, on_false is not _MISSING, on_true is not _MISSING)
        if wanted is None:
            raise ValueError("ComfySwitchNode: connect on_false or on_true")
        return (on_true if wanted == "on_true" else on_false,)

    @staticmethod
    def _pick(switch: bool, has_false: bool, has_true: bool):
        if not has_false:
            return "on_true" if has_true else None
        if not has_true:
            return "on_false"
        return "on_true" if switch else "on_false"


NODES = [ComfySwitchNode]
