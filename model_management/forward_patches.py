"""Patches (LoRA, merges) applied layer by layer at forward time instead of once in place.

WeightPatcher (weight_patches.py) computes every patched weight when a run starts and holds them until it ends:
for a network streamed from its file (host_streaming.py) that would hold a new copy of every patched layer, which
for a LoRA over all of Flux's linear layers is the whole model again -- exactly what streaming avoids. Here, right
before a patched layer runs, its patched weight is computed from what the layer holds at that moment (already cast
to the compute dtype when the layer is stored in another one) and swapped in; right after, the previous tensor is
put back. The numbers are those of WeightPatcher (the same `patched_weight`, fp32 accumulation, one rounding); the
cost is the patch's delta once per layer call.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Tuple

import torch

from model_management.weight_patches import PatchError, PatchSpec, group_patches, patched_weight


class _LayerPatches:
    """The patched tensors of one layer: (attribute, patches) pairs, and what each forward swapped out."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.items: List[Tuple[str, list]] = []
        self.outside: List[List[Tuple[str, torch.Tensor]]] = []

    def before(self, module: torch.nn.Module, args: tuple) -> None:
        held = []
        with torch.no_grad():
            for attr, patches in self.items:
                param = module._parameters[attr]
                held.append((attr, param.data))
                param.data = patched_weight(param.data, patches, f"{self.name}.{attr}" if self.name else attr)
        self.outside.append(held)

    def after(self, module: torch.nn.Module, args: tuple, output) -> None:
        if self.outside:
            for attr, value in self.outside.pop():
                module._parameters[attr].data = value


@contextlib.contextmanager
def patched_per_forward(root: torch.nn.Module, specs: List[PatchSpec]) -> Iterator[torch.nn.Module]:
    """`root` computing with `specs` applied per layer call until the block ends; nothing is changed before or
    after. A patch naming no parameter of `root` raises PatchError, as WeightPatcher does."""
    layers: Dict[int, Tuple[torch.nn.Module, _LayerPatches]] = {}
    seen: Dict[int, list] = {}
    for name, items in group_patches(specs).items():
        owner_name, _, attr = name.rpartition(".")
        try:
            owner = root.get_submodule(owner_name) if owner_name else root
        except AttributeError:
            raise PatchError(f"no parameter {name!r} to patch") from None
        param = owner._parameters.get(attr)
        if param is None:
            raise PatchError(f"no parameter {name!r} to patch")
        if id(param) in seen:  # two names for one tensor (module aliases) patch it once
            seen[id(param)].extend(items)
            continue
        entry = layers.setdefault(id(owner), (owner, _LayerPatches(owner_name)))
        patches = list(items)
        entry[1].items.append((attr, patches))
        seen[id(param)] = patches
    handles = []
    try:
        for owner, patches in layers.values():
            handles.append(owner.register_forward_pre_hook(patches.before))  # after a cast-on-forward hook
            handles.append(owner.register_forward_hook(patches.after, prepend=True, always_call=True))
        yield root
    finally:
        for handle in handles:
            handle.remove()
