"""Weight patches (LoRA, LoCon, LoHa, LoKr, full diffs) and applying them to a module exactly and reversibly.

A patch knows only its own factors; `delta(weight_shape)` rebuilds the full-size change to one parameter with the
published formula of its kind, always in float32 so that fp16/bf16 models get one rounding, at the end. The
`WeightPatcher` adds the strength-weighted sum of several patches to a module's parameters in place, keeping a clone
of exactly the parameters it touches, so that `restore()` puts back the original bits (a sampler run with a LoRA
must leave the cached checkpoint as it was). `patched_state` computes the same results without touching the module,
for merging and saving.

A patch may declare `needs_weight = True` (model merges): its delta depends on the value it is applied to, so it is
called with `weight=` the running float32 value -- the original weight plus the deltas of the patches listed before
it for that parameter. Patches therefore stack in list order (for factor-only patches the order does not matter).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

Shape = Sequence[int]


class PatchError(ValueError):
    """A patch that does not fit the parameter it targets (wrong shapes, missing factors)."""


def _f32(t: Optional[torch.Tensor], device) -> Optional[torch.Tensor]:
    return None if t is None else t.to(device=device, dtype=torch.float32)


def _scale(alpha: Optional[float], rank: int) -> float:
    """alpha / rank; a file without alpha means alpha = rank (scale 1)."""
    return 1.0 if alpha is None else float(alpha) / rank


def _fit(delta: torch.Tensor, shape: Shape, what: str) -> torch.Tensor:
    """Reshape a rebuilt delta to the weight's shape (linear deltas fit 1x1 convs and back); refuse other sizes."""
    shape = tuple(shape)
    if tuple(delta.shape) == shape:
        return delta
    if delta.numel() != torch.Size(shape).numel():
        raise PatchError(f"{what} patch builds a {tuple(delta.shape)} change for a {shape} weight")
    return delta.reshape(shape)


def _tucker(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """LyCORIS' Tucker form for convs: core [r, r, kh, kw], out_factor [r, out], in_factor [r, in] ->
    [out, in, kh, kw]."""
    return torch.einsum("abhw,ao,bi->oihw", core, out_factor, in_factor)


@dataclass
class LoraPatch:
    """LoRA / LoCon: dW = up @ down * alpha / rank, rank = down.shape[0]. Convs: down [r, in, kh, kw],
    up [out, r, 1, 1]; with `mid` [r, r, kh, kw] (LoCon Tucker) down and up are 1x1."""
    up: torch.Tensor
    down: torch.Tensor
    alpha: Optional[float] = None
    mid: Optional[torch.Tensor] = None
    kind = "lora"

    def __post_init__(self) -> None:
        # factors are small: keep them in float32 once, instead of converting them at every apply
        for name in ("up", "down", "mid"):
            value = getattr(self, name)
            if value is not None and value.is_floating_point() and value.dtype != torch.float32:
                setattr(self, name, value.float())

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        device = device or self.up.device
        up, down, mid = _f32(self.up, device), _f32(self.down, device), _f32(self.mid, device)
        if up.shape[1] != down.shape[0]:
            raise PatchError(f"lora patch: up {tuple(up.shape)} and down {tuple(down.shape)} ranks differ")
        if mid is not None:
            d = torch.einsum("oa,abhw,bi->oihw", up.flatten(1), mid, down.flatten(1))
        else:
            d = up.flatten(1) @ down.flatten(1)
        return (_fit(d, weight_shape, self.kind) * _scale(self.alpha, self.rank)).to(dtype)

    def added_to(self, weight: torch.Tensor, strength: float) -> Optional[torch.Tensor]:
        """A new float32 tensor `weight + strength * dW` from one fused matmul-add (dW never built), when dW is a
        plain product of the factors; None when this patch needs the general path (Tucker mid, other shapes)."""
        if self.mid is not None or weight.dim() < 2:
            return None
        up, down = _f32(self.up, weight.device).flatten(1), _f32(self.down, weight.device).flatten(1)
        if up.shape[1] != down.shape[0] or up.shape[0] != weight.shape[0] or \
                up.shape[0] * down.shape[1] != weight.numel():
            return None
        base = weight.detach().to(torch.float32).reshape(up.shape[0], -1)
        return torch.addmm(base, up, down, alpha=strength * _scale(self.alpha, self.rank)).view(weight.shape)

    def tensors(self) -> List[torch.Tensor]:
        return [t for t in (self.up, self.down, self.mid) if t is not None]


@dataclass
class LohaPatch:
    """LoHa: dW = (w1a @ w1b) * (w2a @ w2b) * alpha / rank (Hadamard product), rank = w1b.shape[0]. Tucker convs:
    t1, t2 [r, r, kh, kw] with w*a [r, out] and w*b [r, in]."""
    w1a: torch.Tensor
    w1b: torch.Tensor
    w2a: torch.Tensor
    w2b: torch.Tensor
    alpha: Optional[float] = None
    t1: Optional[torch.Tensor] = None
    t2: Optional[torch.Tensor] = None
    kind = "loha"

    @property
    def rank(self) -> int:
        return int(self.w1b.shape[0])

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        device = device or self.w1a.device
        w1a, w1b, w2a, w2b = (_f32(t, device) for t in (self.w1a, self.w1b, self.w2a, self.w2b))
        t1, t2 = _f32(self.t1, device), _f32(self.t2, device)
        first = _tucker(t1, w1a, w1b) if t1 is not None else w1a @ w1b
        second = _tucker(t2, w2a, w2b) if t2 is not None else w2a @ w2b
        if first.shape != second.shape:
            raise PatchError(f"loha patch: halves {tuple(first.shape)} and {tuple(second.shape)} differ")
        return (_fit(first * second, weight_shape, self.kind) * _scale(self.alpha, self.rank)).to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return [t for t in (self.w1a, self.w1b, self.w2a, self.w2b, self.t1, self.t2) if t is not None]


@dataclass
class LokrPatch:
    """LoKr: dW = kron(w1, w2) * scale. Each of w1, w2 is stored whole or as a product a @ b (w2 also in Tucker
    form with t2 for convs); scale = alpha / rank when a factor is a product (rank = its inner size), else 1."""
    w1: Optional[torch.Tensor] = None
    w1a: Optional[torch.Tensor] = None
    w1b: Optional[torch.Tensor] = None
    w2: Optional[torch.Tensor] = None
    w2a: Optional[torch.Tensor] = None
    w2b: Optional[torch.Tensor] = None
    t2: Optional[torch.Tensor] = None
    alpha: Optional[float] = None
    kind = "lokr"

    @property
    def rank(self) -> Optional[int]:
        """The factored inner size that alpha divides (None when both factors are stored whole)."""
        if self.w2 is None and self.w2b is not None:
            return int(self.w2b.shape[0])
        if self.w1 is None and self.w1b is not None:
            return int(self.w1b.shape[0])
        return None

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        shape = tuple(weight_shape)
        device = device or next(t for t in self.tensors()).device
        w1 = _f32(self.w1, device) if self.w1 is not None else _f32(self.w1a, device) @ _f32(self.w1b, device)
        if self.w2 is not None:
            w2 = _f32(self.w2, device)
        elif self.t2 is not None:
            w2 = _tucker(_f32(self.t2, device), _f32(self.w2a, device), _f32(self.w2b, device))
        else:
            w2 = _f32(self.w2a, device) @ _f32(self.w2b, device)
        if len(shape) == 4:  # conv: w1 [a, c] scales blocks of w2 [b, d, kh, kw]
            if w1.ndim == 2:
                w1 = w1[:, :, None, None]
            if w2.ndim == 2:
                blocks = (shape[0] // w1.shape[0], shape[1] // w1.shape[1], *shape[2:])
                if shape[0] % w1.shape[0] or shape[1] % w1.shape[1] or w2.numel() != torch.Size(blocks).numel():
                    raise PatchError(f"lokr patch: w1 {tuple(w1.shape[:2])} and w2 {tuple(w2.shape)} do not "
                                     f"build a {shape} weight")
                w2 = w2.reshape(blocks)
        rank = self.rank
        scale = 1.0 if rank is None else _scale(self.alpha, rank)
        return (_fit(torch.kron(w1.contiguous(), w2.contiguous()), shape, self.kind) * scale).to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return [t for t in (self.w1, self.w1a, self.w1b, self.w2, self.w2a, self.w2b, self.t2) if t is not None]


@dataclass
class DiffPatch:
    """A full difference: dW = diff (LyCORIS `.diff` for weights, `.diff_b` for biases)."""
    diff: torch.Tensor
    kind = "diff"

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        d = _f32(self.diff, device or self.diff.device)
        return _fit(d, weight_shape, self.kind).to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return [self.diff]


@dataclass(eq=False)
class SlicedPatch:
    """Patches of row blocks of one fused weight: the weight's rows split in proportion to `shares` and `parts[i]`
    changes block i -- a diffusers LoRA on to_q / to_k / to_v of a model that fuses them into one qkv layer
    (shares 1, 1, 1), or on q / k / v / the MLP input of Flux's single blocks (1, 1, 1, 4)."""
    parts: Dict[int, "Patch"]
    shares: Tuple[int, ...] = (1, 1, 1)
    kind = "lora"

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        shape = tuple(weight_shape)
        total = sum(self.shares)
        if shape[0] % total:
            raise PatchError(f"sliced patch: {shape[0]} rows do not split in the proportions {self.shares}")
        unit = shape[0] // total
        starts = [unit * sum(self.shares[:i]) for i in range(len(self.shares))]
        out = torch.zeros(shape, dtype=torch.float32, device=device)
        for index, patch in self.parts.items():
            rows = unit * self.shares[index]
            out[starts[index]:starts[index] + rows] = patch.delta((rows, *shape[1:]), torch.float32, device)
        return out.to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return [t for patch in self.parts.values() for t in patch.tensors()]


@dataclass(eq=False)
class MergePatch:
    """Another model's weight as a patch: dW = weight_factor * W + other_factor * O.

    W is the value being patched (`weight=`, see the module docstring); O is the other model's same-named parameter,
    read from `source` (a `PatchedWeights`) when the patch is applied -- a reference to the other model's tensor,
    with that model's own patches applied out of place, never a stored copy. With strength s:
    (-1, 1) gives W + s (O - W) = (1 - s) W + s O (weighted merges), (0, 1) gives W + s O (add),
    (m - 1, -m) at strength 1 gives m (W - O) (difference)."""
    source: "PatchedWeights"
    name: str
    weight_factor: float = -1.0
    other_factor: float = 1.0
    kind = "merge"
    needs_weight = True

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None,
              weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        other = self.source.weight(self.name)
        if tuple(other.shape) != tuple(weight_shape):
            raise PatchError(f"merge patch: the other model's {self.name} is {tuple(other.shape)}, the weight "
                             f"{tuple(weight_shape)}")
        device = device or (weight.device if weight is not None else other.device)
        d = other.to(device=device, dtype=torch.float32, copy=True)
        if self.other_factor != 1.0:
            d.mul_(self.other_factor)
        if self.weight_factor != 0.0:
            if weight is None:
                raise PatchError("merge patch: needs the weight it is applied to")
            d.add_(weight.to(device=device, dtype=torch.float32), alpha=self.weight_factor)
        return d.to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return []  # it owns no factors: the other model's weights stay where they are


@dataclass(eq=False)
class ScalePatch:
    """dW = W, the running value it is applied to: at strength s - 1 it scales the weight (and the patches listed
    before it) by s. ComfyUI's `strength_model` of add_patches is one of these before the patch it goes with."""
    kind = "scale"
    needs_weight = True

    def delta(self, weight_shape: Shape, dtype: torch.dtype = torch.float32, device=None,
              weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if weight is None:
            raise PatchError("scale patch: needs the weight it is applied to")
        return weight.to(device=device or weight.device, dtype=torch.float32, copy=True).to(dtype)

    def tensors(self) -> List[torch.Tensor]:
        return []


class PatchedWeights:
    """Read access to one model's effective weights: the parameters of its module (or residency handle, resolved on
    each use so that eviction still frees memory) with its own patch list applied out of place, one parameter at a
    time. Nothing is computed up front and nothing is kept; an unpatched parameter is the module's own tensor."""

    def __init__(self, module: Any, patches: Iterable["PatchSpec"] = (), label: str = "") -> None:
        self._module = module
        self.patches: List[PatchSpec] = list(patches)
        self.label = label
        self._index: Optional[Tuple[Any, Dict[int, List[Tuple[Patch, float]]]]] = None

    def module(self) -> torch.nn.Module:
        from diffusion.handles import resolve
        return resolve(self._module)

    def _by_tensor(self, module: torch.nn.Module) -> Dict[int, List[Tuple[Patch, float]]]:
        """Patches per parameter tensor (aliases merged), for the module object currently resolved."""
        cached = self._index
        if cached is None or cached[0]() is not module:
            index: Dict[int, List[Tuple[Patch, float]]] = {}
            for name, items in group_patches(self.patches).items():
                index.setdefault(id(_lookup(module, name)), []).extend(items)
            cached = self._index = (weakref.ref(module), index)
        return cached[1]

    def weight(self, name: str) -> torch.Tensor:
        module = self.module()
        param = _lookup(module, name)
        items = self._by_tensor(module).get(id(param)) if self.patches else None
        return patched_weight(param, items, name) if items else param.detach()


Patch = Union[LoraPatch, LohaPatch, LokrPatch, DiffPatch, SlicedPatch, MergePatch, ScalePatch]
PatchSpec = Tuple[str, Patch, float]  # (parameter name, patch, strength)


def group_patches(patches: Iterable[PatchSpec]) -> Dict[str, List[Tuple[Patch, float]]]:
    """Patches per parameter name, in order, without the zero-strength ones."""
    grouped: Dict[str, List[Tuple[Patch, float]]] = {}
    for name, patch, strength in patches:
        if float(strength) != 0.0:
            grouped.setdefault(name, []).append((patch, float(strength)))
    return grouped


def patched_weight(weight: torch.Tensor, patches: Sequence[Tuple[Patch, float]], name: str = "") -> torch.Tensor:
    """weight + sum(strength * dW) in list order, summed in float32 and rounded once to the weight's dtype; a new
    tensor. A `needs_weight` patch gets the running value (weight plus the earlier deltas) as `weight=`."""
    total = None
    first, rest = patches[0], patches[1:]
    if hasattr(first[0], "added_to"):
        try:
            total = first[0].added_to(weight, first[1])
        except PatchError as exc:
            raise PatchError(f"{name}: {exc}") from None
    if total is None:
        total, rest = weight.detach().to(torch.float32, copy=True), patches
    for patch, strength in rest:
        try:
            if getattr(patch, "needs_weight", False):
                delta = patch.delta(weight.shape, torch.float32, weight.device, weight=total)
            else:
                delta = patch.delta(weight.shape, torch.float32, weight.device)
            total.add_(delta, alpha=strength)
        except PatchError as exc:
            raise PatchError(f"{name}: {exc}") from None
    return total.to(weight.dtype)


def patched_state(params: Union[torch.nn.Module, Mapping[str, torch.Tensor]],
                  patches: Iterable[PatchSpec]) -> Dict[str, torch.Tensor]:
    """The patched values of the touched parameters as new tensors; the module (or mapping) is left as it is."""
    grouped = group_patches(patches)
    out: Dict[str, torch.Tensor] = {}
    for name, items in grouped.items():
        weight = _lookup(params, name)
        out[name] = patched_weight(weight, items, name)
    return out


def _lookup(params: Union[torch.nn.Module, Mapping[str, torch.Tensor]], name: str) -> torch.Tensor:
    try:
        return params.get_parameter(name) if isinstance(params, torch.nn.Module) else params[name]
    except (AttributeError, KeyError):
        raise PatchError(f"no parameter {name!r} to patch") from None


@dataclass
class PatchStats:
    """What the last apply/restore did: parameters touched, bytes held in backups, seconds spent."""
    parameters: int = 0
    patches: int = 0
    backup_bytes: int = 0
    apply_seconds: float = 0.0
    restore_seconds: float = 0.0
    skipped_zero_strength: int = 0


@dataclass(eq=False)
class WeightPatcher:
    """Adds patches to a module's parameters in place and takes them off again bit-exactly.

    `backup_device`: where the clones of the original weights live (None: beside the weights; "cpu" saves
    accelerator memory at the cost of a copy back on restore)."""
    module: torch.nn.Module
    patches: List[PatchSpec]
    backup_device: Optional[Union[str, torch.device]] = None
    stats: PatchStats = field(default_factory=PatchStats)
    _backups: Dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _applied: bool = field(default=False, repr=False)

    @property
    def applied(self) -> bool:
        return self._applied

    @torch.no_grad()
    def apply(self) -> PatchStats:
        """Patch the module in place; the touched parameters are backed up first. An error restores what was done."""
        if self._applied:
            raise RuntimeError("patches are already applied; restore() before applying again")
        start = time.perf_counter()
        grouped = group_patches(self.patches)
        targets: Dict[int, Tuple[str, torch.Tensor, List[Tuple[Patch, float]]]] = {}
        for name, items in grouped.items():  # two names for one tensor (module aliases) patch it once
            param = _lookup(self.module, name)
            if id(param) in targets:
                targets[id(param)][2].extend(items)
            else:
                targets[id(param)] = (name, param, list(items))
        self._backups = {}
        self._applied = True
        try:
            for name, param, items in targets.values():
                new = patched_weight(param, items, name)
                if self.backup_device is None:
                    # keep the original tensor itself and hand the parameter the new one: no copies, and
                    # restore is exact because it puts the very same tensor back
                    self._backups[name] = param.data
                    param.data = new
                else:
                    self._backups[name] = param.detach().to(self.backup_device, copy=True)
                    param.data.copy_(new)
        except BaseException:
            self.restore()
            raise
        self.stats = PatchStats(parameters=len(self._backups), patches=sum(len(t[2]) for t in targets.values()),
                                backup_bytes=sum(b.numel() * b.element_size() for b in self._backups.values()),
                                apply_seconds=time.perf_counter() - start,
                                skipped_zero_strength=sum(1 for _, _, s in self.patches if float(s) == 0.0))
        return self.stats

    @torch.no_grad()
    def restore(self) -> None:
        """Put every backed-up parameter back exactly and drop the backups (no-op when nothing is applied)."""
        start = time.perf_counter()
        for name, original in self._backups.items():
            param = self.module.get_parameter(name)
            if self.backup_device is None:
                param.data = original
            else:
                param.data.copy_(original)
        self._backups = {}
        self._applied = False
        self.stats.restore_seconds = time.perf_counter() - start
