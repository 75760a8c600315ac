"""Weights stored in one dtype and computed in another, cast layer by layer at forward time.

UNETLoader's `weight_dtype` (fp8_e4m3fn, fp8_e5m2) keeps a diffusion model's weights in fp8 -- a quarter of fp32's
memory -- while its layers compute in the device's compute dtype: right before a layer runs, its own weights are
cast to the compute dtype into temporaries the layer uses, and after it ran the stored fp8 tensors are put back.
Only one layer's cast copy exists at any time. Patches (LoRA) apply to the stored tensors, as they are what the
layer holds between forwards.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch

CAST_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.GroupNorm,
               torch.nn.LayerNorm, torch.nn.Embedding)
STORAGE_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
                  "fp8_e5m2": torch.float8_e5m2}


def _own_floating(module: torch.nn.Module) -> List[tuple]:
    return [(kind, key, value) for kind, items in (("p", module._parameters), ("b", module._buffers))
            for key, value in items.items() if value is not None and value.is_floating_point()]


class _CastHooks:
    """The pre/post forward hooks of one layer: cast in, put back."""

    def __init__(self, compute: torch.dtype, via: Optional[torch.dtype] = None) -> None:
        self.compute, self.via = compute, via
        self.stored: Dict[int, list] = {}

    def before(self, module: torch.nn.Module, args: tuple) -> None:
        held = []
        for kind, key, _ in _own_floating(module):
            value = module._parameters[key].data if kind == "p" else module._buffers[key]
            held.append((kind, key, value))
            cast = (value.to(self.via) if self.via is not None else value).to(self.compute)
            if kind == "p":
                module._parameters[key].data = cast
            else:
                module._buffers[key] = cast
        self.stored.setdefault(id(module), []).append(held)

    def after(self, module: torch.nn.Module, args: tuple, output) -> None:
        for kind, key, value in self.stored[id(module)].pop():
            if kind == "p":
                module._parameters[key].data = value
            else:
                module._buffers[key] = value
        return None


def store_in(root: torch.nn.Module, storage: Optional[torch.dtype], compute: torch.dtype,
             via: Optional[torch.dtype] = None) -> torch.nn.Module:
    """Convert `root`'s layer weights to `storage` (one tensor at a time) and make every such layer compute in
    `compute` (`root.compute_dtype` tells the network which dtype its activations are in). Layers of other kinds
    keep their weights in `compute`. `storage` None keeps each layer's tensors as they are (weights left in their
    file, model_management/mapped_weights.py); `via`: round the weights through this dtype as they are cast (an fp8
    `weight_dtype` asked for a model whose stored weights are kept wider)."""
    hooks = _CastHooks(compute, via)
    for module in root.modules():
        own = _own_floating(module)
        if not own:
            continue
        castable = isinstance(module, CAST_LAYERS)
        for kind, key, value in own:
            target = (storage or value.dtype) if castable else compute
            rounded = not castable and via is not None  # rounded as an fp8 load rounds every weight
            if value.dtype != target or rounded:
                if rounded:
                    value = value.to(via)
                if kind == "p":
                    module._parameters[key].data = value.data.to(target)
                else:
                    module._buffers[key] = value.to(target)
        if castable and (via is not None or any(value.dtype != compute for _, _, value in _own_floating(module))):
            module.register_forward_pre_hook(hooks.before)
            module.register_forward_hook(hooks.after, always_call=True)  # also when the forward raises
    root.compute_dtype = compute
    return root


class _BlockCastHooks:
    """Cast a whole block's tensors on entry and put them back on exit, for networks whose code reads a layer's
    weight dtype before calling it (transformers' T5 casts its hidden states to `wo.weight.dtype`): inside the
    block every weight is already in the compute dtype."""

    def __init__(self, compute: torch.dtype) -> None:
        self.compute = compute
        self.stored: Dict[int, list] = {}

    def before(self, block: torch.nn.Module, args: tuple) -> None:
        held = []
        for module in block.modules():
            for kind, key, value in _own_floating(module):
                if value.dtype == self.compute:
                    continue
                current = module._parameters[key].data if kind == "p" else value
                held.append((module, kind, key, current))
                cast = current.to(self.compute)
                if kind == "p":
                    module._parameters[key].data = cast
                else:
                    module._buffers[key] = cast
        self.stored.setdefault(id(block), []).append(held)

    def after(self, block: torch.nn.Module, args: tuple, output) -> None:
        for module, kind, key, value in self.stored[id(block)].pop():
            if kind == "p":
                module._parameters[key].data = value
            else:
                module._buffers[key] = value
        return None


def store_blockwise(root: torch.nn.Module, blocks, compute: torch.dtype) -> torch.nn.Module:
    """Keep the tensors of `blocks` (submodules of `root`) as they are, cast block by block to `compute` as each
    runs; every other floating tensor of `root` is converted to `compute` now."""
    blocks = list(blocks)
    inside = {id(m) for block in blocks for m in block.modules()}
    for module in root.modules():
        if id(module) in inside:
            continue
        for kind, key, value in _own_floating(module):
            if value.dtype != compute:
                if kind == "p":
                    module._parameters[key].data = value.data.to(compute)
                else:
                    module._buffers[key] = value.to(compute)
    hooks = _BlockCastHooks(compute)
    for block in blocks:
        block.register_forward_pre_hook(hooks.before)
        block.register_forward_hook(hooks.after, always_call=True)
    root.compute_dtype = compute
    return root
