"""ComfyUI's control protocol, for the control objects packs define or subclass (comfy.controlnet.ControlBase).

Tessera's own ControlRuntime is asked for residuals in the UNet's control format (`residuals(...)`, see
diffusion/unet/model.py). A ComfyUI-style control instead has:
  - `pre_run(model, percent_to_sigma)` before a sampler run and `cleanup()` after it;
  - `get_control(x_noisy, sigma, cond, batched_number, transformer_options)` once per UNet batch, where x_noisy is
    the batch's latent before c_in scaling, sigma is per batch row, cond holds the batch's tensors by ComfyUI's
    names (`c_crossattn`, `y`, `c_concat`) and batched_number is how many conditionings share the batch;
  - a result in ComfyUI's convention, which the UNet consumes by popping from the end of each list:
      "input":  popped after each input block, so the LAST entry belongs to input block 0;
      "middle": popped after the middle block;
      "output": popped in step with the skips (deepest first), so the list runs in input-block order, its last
                entry belonging to the last input block.
The two conventions are translated here, so stacks may mix both kinds: a pack's control over ours calls our
`get_control`, ours over a pack's calls its `get_control` through `comfy_residuals`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional

import torch


@dataclass
class ControlCall:
    """One UNet batch as both conventions see it."""

    x: torch.Tensor  # the batch's latent, unscaled (ComfyUI's x_noisy)
    sigma: torch.Tensor  # [B]
    x_in: torch.Tensor  # x scaled by c_in (what the UNet and our control models take)
    timestep: torch.Tensor  # [B] the UNet's timestep
    context: Optional[torch.Tensor]
    y: Optional[torch.Tensor]
    concat: Optional[torch.Tensor]
    batched_number: int
    transformer_options: dict
    model: Any
    num_input_blocks: int

    @property
    def cond(self) -> dict:
        """The conditioning tensors by ComfyUI's names, as get_control reads them."""
        out = {"c_crossattn": self.context}
        if self.y is not None:
            out["y"] = self.y
        if self.concat is not None:
            out["c_concat"] = self.concat
        return out


def is_comfy_control(obj: Any) -> bool:
    """A control that speaks only ComfyUI's protocol (no `residuals`)."""
    return obj is not None and callable(getattr(obj, "get_control", None)) and \
        not callable(getattr(obj, "residuals", None))


def _listed(value: Any) -> List[Optional[torch.Tensor]]:
    if value is None:
        return []
    return [value] if torch.is_tensor(value) else list(value)


def from_comfy(control: Optional[Dict[str, Any]], num_input_blocks: int) -> Optional[Dict[str, list]]:
    """A ComfyUI-convention control dict in the UNet's convention (lists of `num_input_blocks`, input-block
    order). Entries a ComfyUI UNet would never pop (lists longer than the blocks) are dropped as it drops them."""
    if control is None:
        return None
    n = num_input_blocks
    out: Dict[str, list] = {}
    given = _listed(control.get("input"))
    if any(r is not None for r in given):
        out["input"] = [given[len(given) - 1 - i] if i < len(given) else None for i in range(n)]
    given = _listed(control.get("output"))
    if any(r is not None for r in given):
        shift = n - len(given)  # the last entry meets the last input block's skip
        out["output"] = [given[i - shift] if 0 <= i - shift < len(given) else None for i in range(n)]
    middle = [r for r in _listed(control.get("middle")) if r is not None]
    if middle:
        out["middle"] = middle[-1:]  # a ComfyUI UNet pops one
    return out or None


def to_comfy(control: Optional[Dict[str, Any]]) -> Optional[Dict[str, list]]:
    """A UNet-convention control dict in ComfyUI's convention (fresh lists: the consumer pops them)."""
    if control is None:
        return None
    return {"input": list(reversed(_listed(control.get("input")))),
            "middle": _listed(control.get("middle")),
            "output": _listed(control.get("output"))}


def comfy_residuals(control: Any, call: ControlCall) -> Optional[Dict[str, list]]:
    """Run a ComfyUI-style control for one UNet batch; its result in the UNet's convention."""
    out = control.get_control(call.x, call.sigma, call.cond, call.batched_number, call.transformer_options)
    return from_comfy(out, call.num_input_blocks)


def distinct_controls(entry_lists: Iterable[Iterable[Any]]) -> List[Any]:
    """The top control of every entry, each object once, in first-seen order."""
    seen, out = set(), []
    for entries in entry_lists:
        for entry in entries or ():
            control = getattr(entry, "control", None)
            if control is not None and id(control) not in seen:
                seen.add(id(control))
                out.append(control)
    return out


@contextlib.contextmanager
def controls_running(controls: List[Any], model: Any) -> Iterator[None]:
    """ComfyUI's run bracket for every control: `pre_run(model, percent_to_sigma)` before, `cleanup()` after
    (also when sampling fails), each control once; a control forwards both to the ones stacked below it."""
    started = []
    try:
        for control in controls:
            pre_run = getattr(control, "pre_run", None)
            if callable(pre_run):
                pre_run(model, model.model_sampling.percent_to_sigma)
                started.append(control)
        yield
    finally:
        for control in started:
            cleanup = getattr(control, "cleanup", None)
            if callable(cleanup):
                cleanup()
