"""Hypernetworks in the common `.pt` format (the one the A1111 web UI trains and most shared files use).

The file is a dict. Integer keys are feature widths (320, 640, 768, 1024, 1280): each holds two state dicts, the
small MLPs applied to the attention context before `to_k` and before `to_v` of every attention layer whose context
has that width (self-attention sees the image features, cross-attention the text). Each MLP is a sequence of Linear
layers (`linear.N.weight/bias`) with the file's activation after each but the last (after the last too when
`activate_output`), optionally followed by a LayerNorm; dropout only matters in training. It is applied residually:
`context + strength * mlp(context)`.

The loaded hypernetwork is a hook on the attention layers, installed only while the MODEL is used (like LoRA
patches), so the shared UNet stays clean.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F

from model_management.file_loading import ModelFileError, RefusedPickleError

# activation names the format uses; "swish" means hard-swish there
ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": F.relu,
    "leakyrelu": F.leaky_relu,
    "elu": F.elu,
    "swish": F.hardswish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softsign": F.softsign,
    "mish": F.mish,
    "gelu": F.gelu,
    "silu": F.silu,
    "hardswish": F.hardswish,
}


@dataclass
class _Layer:
    kind: str  # "linear" | "norm"
    weight: torch.Tensor
    bias: Optional[torch.Tensor]


@dataclass
class HypernetworkMLP:
    """One of the two MLPs (for k or for v) at one width."""
    layers: List[_Layer]
    activation: Callable[[torch.Tensor], torch.Tensor]
    activate_output: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linears = [i for i, layer in enumerate(self.layers) if layer.kind == "linear"]
        last = linears[-1]
        h = x
        for i, layer in enumerate(self.layers):
            weight = layer.weight.to(h.device, h.dtype)
            bias = None if layer.bias is None else layer.bias.to(h.device, h.dtype)
            if layer.kind == "linear":
                h = F.linear(h, weight, bias)
                if i != last or self.activate_output:
                    h = self.activation(h)
            else:
                h = F.layer_norm(h, (h.shape[-1],), weight, bias)
        return h


@dataclass
class Hypernetwork:
    name: str
    mlps: Dict[int, Tuple[HypernetworkMLP, HypernetworkMLP]]  # width -> (for k, for v)
    info: Dict[str, object] = field(default_factory=dict)

    def widths(self) -> List[int]:
        return sorted(self.mlps)


def _mlp(state: dict, where: str, activation, activate_output: bool) -> HypernetworkMLP:
    by_index: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "linear" or not parts[1].isdigit() or parts[2] not in ("weight", "bias"):
            raise ModelFileError(f"{where}: unexpected key {key!r} (expected linear.N.weight / linear.N.bias)")
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"{where}: {key} is not a tensor")
        by_index.setdefault(int(parts[1]), {})[parts[2]] = value.float()
    layers = []
    for index in sorted(by_index):
        params = by_index[index]
        if "weight" not in params:
            raise ModelFileError(f"{where}: linear.{index} has a bias but no weight")
        kind = "linear" if params["weight"].dim() == 2 else "norm"
        layers.append(_Layer(kind, params["weight"], params.get("bias")))
    if not any(layer.kind == "linear" for layer in layers):
        raise ModelFileError(f"{where}: no linear layers")
    return HypernetworkMLP(layers, activation, activate_output)


def parse_hypernetwork(data: dict, name: str) -> Hypernetwork:
    """Build a Hypernetwork from the loaded `.pt` dict, checking its structure."""
    if not isinstance(data, dict):
        raise ModelFileError(f"{name}: not a hypernetwork file (expected a dict, found {type(data).__name__})")
    activation_name = str(data.get("activation_func", "linear") or "linear").lower()
    if activation_name not in ACTIVATIONS:
        raise ModelFileError(f"{name}: unknown activation_func {activation_name!r}; supported: "
                             f"{', '.join(sorted(ACTIVATIONS))}")
    activation = ACTIVATIONS[activation_name]
    activate_output = bool(data.get("activate_output", False))
    mlps = {}
    for key, value in data.items():
        if not isinstance(key, int):
            continue
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(isinstance(v, dict) for v in value):
            raise ModelFileError(f"{name}: width {key} should hold two state dicts (for k and v)")
        mlps[key] = (_mlp(value[0], f"{name} [{key}] k", activation, activate_output),
                     _mlp(value[1], f"{name} [{key}] v", activation, activate_output))
    if not mlps:
        raise ModelFileError(f"{name}: no hypernetwork layers found (no integer width keys); is it a "
                             f"hypernetwork .pt file?")
    for width, pair in mlps.items():
        for mlp, which in zip(pair, "kv"):
            first = next(layer for layer in mlp.layers if layer.kind == "linear")
            last = [layer for layer in mlp.layers if layer.kind == "linear"][-1]
            if first.weight.shape[1] != width or last.weight.shape[0] != width:
                raise ModelFileError(f"{name}: the {which} network at width {width} maps "
                                     f"{first.weight.shape[1]} -> {last.weight.shape[0]} features")
    info = {k: data[k] for k in ("layer_structure", "activation_func", "is_layer_norm", "name", "step")
            if k in data}
    return Hypernetwork(str(data.get("name") or name), mlps, info)


def load_hypernetwork(path: str) -> Hypernetwork:
    """Read a hypernetwork `.pt` file safely (`torch.load(weights_only=True)`: tensors and plain data only)."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: file not found")
    import pickle
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RefusedPickleError(f"{name}: refused: the file holds Python objects other than tensors and plain "
                                 f"data, and loading it could run code ({exc})")
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"{name}: not a readable hypernetwork file (corrupted or truncated?): {exc}")
    return parse_hypernetwork(data, name)


class AttentionContextHook:
    """What an attention layer calls on its context: returns the contexts for to_k and to_v."""

    def __init__(self, applied: List[Tuple[Hypernetwork, float]]) -> None:
        self.applied = applied

    def __call__(self, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        k = v = context
        width = context.shape[-1]
        for network, strength in self.applied:
            pair = network.mlps.get(width)
            if pair is None or strength == 0:
                continue
            k = k + pair[0](k) * strength
            v = v + pair[1](v) * strength
        return k, v


@contextlib.contextmanager
def installed(unet: torch.nn.Module, applied: List[Tuple[Hypernetwork, float]]) -> Iterator[torch.nn.Module]:
    """Hypernetworks active on every attention layer of `unet` inside the block; removed on exit."""
    if not applied:
        yield unet
        return
    hook = AttentionContextHook(list(applied))
    layers = [m for m in unet.modules() if hasattr(m, "context_hook")]
    previous = [layer.context_hook for layer in layers]
    for layer in layers:
        layer.context_hook = hook
    try:
        yield unet
    finally:
        for layer, old in zip(layers, previous):
            layer.context_hook = old
