"""Convolution weights kept in oneDNN's blocked layout while a sampler runs on the CPU.

On a bf16 CPU (AMX or AVX512-BF16) oneDNN computes a convolution in a blocked weight layout and, given a plain
weight, reorders it into that layout on every call: for SD1.5's 1280-channel 3x3 convs the reorder costs twice the
convolution itself (AMX, 256², batch 2: 9.1 ms reorder, 4.2 ms convolution), ~30 % of a UNet forward in all.
`packed_convolutions(root)` reorders each Conv2d weight once as the scope starts and computes with the packed copy
until the scope ends, when the plain weights are put back bit for bit. Packing and unpacking cost ~1.1 s per run
for SD1.5 on an AMX CPU (page faults and heap trimming included) against 0.26 s saved per forward at 256² and
0.47 s at 512² (batch 2, channels-last; bench/bf16_parts.py `packed`): a run gains from its fifth model call on
at 256², its third at 512².

One copy of the weights: a packed layer's parameter data is swapped for a one-element NaN placeholder of the same
shape and dtype while the packed copy exists (the packed copy is a permutation of the same values), so memory does
not grow; anything that reads a packed weight's values during the scope gets NaNs, loudly wrong rather than
silently. The scope is the sampler's run (`DiffusionModel.patched`), inside which only forwards happen: patching,
saving and merging see the plain weights. Layers with forward hooks (fp8 cast-on-forward, streaming), other
padding modes, string paddings or weights not in bf16 on the CPU are left as they are.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional

import torch

from model_management.host_allocator import release_free_memory

PACKED_DTYPES = (torch.bfloat16,)
TRIM_EVERY_BYTES = 64 << 20  # how far the heap may overshoot while weights are reallocated
NOMINAL_BATCH, NOMINAL_SIDE = 2, 32  # the input shape oneDNN picks a weight layout for (any shape runs with it)


def packing_available() -> bool:
    """Whether this torch has oneDNN's CPU convolution ops that take a prepacked weight."""
    mkldnn = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_convolution_weight")
            and hasattr(mkldnn, "_convolution_pointwise"))


def _packable(module: torch.nn.Module) -> bool:
    if not isinstance(module, torch.nn.Conv2d) or type(module).forward is not torch.nn.Conv2d.forward:
        return False  # a subclass's own forward (a pack's wrapper) is kept
    weight = module.weight
    return (weight is not None and weight.device.type == "cpu" and weight.dtype in PACKED_DTYPES
            and not weight.is_mkldnn and module.padding_mode == "zeros" and not isinstance(module.padding, str)
            and (module.bias is None or module.bias.dtype == weight.dtype)
            and not module._forward_pre_hooks and not module._forward_hooks)


def _layout_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last)
                                   and not x.is_contiguous()) else torch.contiguous_format


class _Reallocations:
    """Bytes of weights reallocated since the heap's free pages were last handed back. Each packed or unpacked
    weight frees a block the next weight of another size cannot reuse; left alone, the heap keeps those holes
    resident and a scope would peak near two copies of the weights (measured: +1.1 GB for SD1.5)."""

    def __init__(self) -> None:
        self.pending = 0

    def moved(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.pending >= TRIM_EVERY_BYTES:
            self.settle()

    def settle(self) -> None:
        if self.pending:
            release_free_memory()
            self.pending = 0


class _PackedLayer:
    """One layer's packed state: its packed weight, and its forward while packed."""

    def __init__(self, module: torch.nn.Conv2d, placeholder: torch.Tensor, moves: _Reallocations) -> None:
        self.module = module
        self.placeholder = placeholder
        self.moves = moves
        self.packed: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        module = self.module
        if x.device.type != "cpu" or x.dtype != module.weight.dtype or x.dim() != 4:
            return torch.nn.functional.conv2d(x, self.packed.to_dense(), module.bias, module.stride, module.padding,
                                              module.dilation, module.groups)
        out = torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, module.bias, list(module.padding), list(module.stride), list(module.dilation),
            module.groups, "none", [], "")
        # oneDNN hands back channels-last; the layers after it see the layout the plain conv gives
        return out.contiguous(memory_format=_layout_of(x))

    def pack(self, input_shape: List[int]) -> None:
        module = self.module
        with torch.inference_mode(False), torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                module.weight.data, list(module.padding), list(module.stride), list(module.dilation),
                module.groups, input_shape)
            nbytes = module.weight.nbytes
            module.weight.data = self.placeholder.expand(module.weight.shape)
        self.moves.moved(nbytes)

    def unpack(self) -> None:
        if self.packed is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            self.module.weight.data = self.packed.to_dense()
        self.packed = None
        self.moves.moved(self.module.weight.nbytes)


def _channels_last_input(module: torch.nn.Module, args: tuple) -> tuple:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last),) + tuple(args[1:])
    return args


@contextlib.contextmanager
def packed_convolutions(root: torch.nn.Module, channels_last: bool = False) -> Iterator[int]:
    """Within the scope, `root`'s bf16 CPU Conv2d layers compute with weights packed once at its start; yields how
    many layers take part. On exit (errors included) every plain weight is back, bit for bit.

    A packed layer returns the memory layout of its input, as the plain layer does. `channels_last` also hands
    `root` its 4-D first argument in channels-last layout, which oneDNN computes without reordering activations
    (and a UNet's transformer blocks flatten without a copy); the output is then channels-last too."""
    if not packing_available():
        yield 0
        return
    placeholders: Dict[torch.dtype, torch.Tensor] = {}
    layers: List[_PackedLayer] = []
    moves = _Reallocations()
    for module in root.modules():
        if "forward" in module.__dict__ or not _packable(module):
            continue
        dtype = module.weight.dtype
        if dtype not in placeholders:
            with torch.inference_mode(False):
                placeholders[dtype] = torch.full((1,), float("nan"), dtype=dtype)
        layer = _PackedLayer(module, placeholders[dtype].reshape([1] * module.weight.dim()), moves)
        module.forward = layer.forward
        layers.append(layer)
    hook = root.register_forward_pre_hook(_channels_last_input) if channels_last and layers else None
    try:
        for layer in layers:
            layer.pack([NOMINAL_BATCH, layer.module.in_channels, NOMINAL_SIDE, NOMINAL_SIDE])
        yield len(layers)
    finally:
        if hook is not None:
            hook.remove()
        for layer in layers:
            del layer.module.forward
            layer.unpack()
        moves.settle()
