"""Model merges as patches on clones: no weight is copied when a merge node runs.

A merge returns a clone of the first model whose patch list gains one `MergePatch` per shared parameter. Each patch
refers to the second model's parameter (through its residency handle) and to the second model's own patches, so a
LoRA on model2 is part of what is merged; the blend is computed only while the merged model is used (`patched()`,
sampling, saving), parameter by parameter, and undone bit-exact afterwards like any other patch.

Formulas (W1, W2: the two models' effective weights -- model1's value at the point of the merge in its patch list,
i.e. including the LoRAs applied to it before the merge; model2's with all its patches):

- simple (ratio r):       r W1 + (1 - r) W2                (r is model1's share; r = 1 leaves model1 exactly)
- add:                    W1 + W2
- subtract (multiplier m): m (W1 - W2)                     (ComfyUI's ModelMergeSubtract; m = 1 gives W1 - W2)
- blocks (ratios by LDM block): simple with r chosen per parameter by `block_ratio`
- CLIP simple: simple over the text stack's parameters (position ids / logit scale are never merged)

Compatibility: the two models must be of the same family (an SD1 model does not merge into SDXL: `MergeError` names
both). Within a family, parameters missing from model2 or shaped differently (an inpainting model's 9-channel input
conv) keep model1's value and are reported; if any attention weight differs the models are different sizes and the
merge is refused.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from model_management.model_objects import DiffusionModel, TextEncoderModel
from model_management.weight_patches import MergePatch, PatchedWeights, PatchSpec

FAMILY_NAMES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}
# Never merged: fixed index buffers and CLIP's training-only temperature.
_SKIPPED_SUFFIXES = ("position_ids", "logit_scale")

Reporter = Optional[Callable[[str], None]]


class MergeError(ValueError):
    """Two models that cannot be merged (different families or sizes)."""


def _family_label(name: str) -> str:
    return FAMILY_NAMES.get(name, name)


def block_ratio(name: str, ratios: Mapping[str, float]) -> float:
    """The ratio for an LDM UNet parameter: the value whose key is the longest prefix of `name`; names that no key
    starts with take the FIRST value (ComfyUI's ModelMergeBlocks convention). With {"input", "middle", "out"}:
    `input_blocks.*` -> input, `middle_block.*` -> middle, `output_blocks.*` and the final `out.*` layers -> out,
    and `time_embed.*` / `label_emb.*` -> input (the first)."""
    if not ratios:
        raise ValueError("block_ratio needs at least one ratio")
    chosen, length = next(iter(ratios.values())), 0
    for prefix, value in ratios.items():
        if name.startswith(prefix) and len(prefix) > length:
            chosen, length = value, len(prefix)
    return float(chosen)


def shared_parameters(module1: torch.nn.Module, module2: torch.nn.Module, family1: str, family2: str,
                      what: str = "model") -> Tuple[List[str], List[str]]:
    """(names to merge, descriptions of model1 parameters left alone). Raises MergeError for other families or when
    attention weights do not line up (a different-size model)."""
    if family1 != family2:
        raise MergeError(f"cannot merge a {_family_label(family2)} {what} (model2) into a {_family_label(family1)} "
                         f"{what} (model1): the model families differ")
    params2 = dict(module2.named_parameters())
    shared: List[str] = []
    skipped: List[str] = []
    attention: List[str] = []
    for name, p1 in module1.named_parameters():
        if name.endswith(_SKIPPED_SUFFIXES) or not p1.is_floating_point():
            continue
        p2 = params2.get(name)
        if p2 is not None and tuple(p2.shape) == tuple(p1.shape) and p2.is_floating_point():
            shared.append(name)
            continue
        why = "missing in model2" if p2 is None else f"model2 has {tuple(p2.shape)}, model1 {tuple(p1.shape)}"
        skipped.append(f"{name} ({why})")
        if "attn" in name:
            attention.append(skipped[-1])
    if attention:
        shown = "; ".join(attention[:3])
        raise MergeError(f"cannot merge these {_family_label(family1)} {what}s: their attention weights do not line "
                         f"up ({len(attention)} differ, e.g. {shown}); they are different sizes or variants")
    if not shared:
        raise MergeError(f"the two {what}s share no parameter of the same shape; nothing to merge")
    return shared, skipped


def _merge_patches(names: List[str], source: PatchedWeights, strength: Callable[[str], float],
                   weight_factor: float, other_factor: float) -> List[PatchSpec]:
    specs: List[PatchSpec] = []
    for name in names:
        s = float(strength(name))
        if s != 0.0:  # a zero strength would be skipped when applied anyway
            specs.append((name, MergePatch(source, name, weight_factor, other_factor), s))
    return specs


def _report(report: Reporter, skipped: List[str], what: str) -> None:
    if report is not None and skipped:
        shown = ", ".join(skipped[:4])
        report(f"{len(skipped)} {what} parameter(s) do not match model2 and keep model1's value: {shown}"
               + (" ..." if len(skipped) > 4 else ""))


def merge_unet(model1: DiffusionModel, model2: DiffusionModel, strength: Callable[[str], float],
               weight_factor: float = -1.0, other_factor: float = 1.0, report: Reporter = None) -> DiffusionModel:
    """A clone of model1 with a MergePatch (dW = weight_factor W1 + other_factor W2, at `strength(name)`) on each
    UNet parameter it shares with model2."""
    names, skipped = shared_parameters(model1.unet, model2.unet, model1.family.name, model2.family.name, "model")
    _report(report, skipped, "model")
    source = PatchedWeights(model2._unet, model2.patches, model2.source)
    return model1.with_patches(_merge_patches(names, source, strength, weight_factor, other_factor))


def merge_simple(model1: DiffusionModel, model2: DiffusionModel, ratio: float,
                 report: Reporter = None) -> DiffusionModel:
    """ratio * W1 + (1 - ratio) * W2."""
    return merge_unet(model1, model2, lambda _: 1.0 - float(ratio), report=report)


def merge_add(model1: DiffusionModel, model2: DiffusionModel, report: Reporter = None) -> DiffusionModel:
    """W1 + W2."""
    return merge_unet(model1, model2, lambda _: 1.0, 0.0, 1.0, report=report)


def merge_subtract(model1: DiffusionModel, model2: DiffusionModel, multiplier: float,
                   report: Reporter = None) -> DiffusionModel:
    """multiplier * (W1 - W2)."""
    m = float(multiplier)
    return merge_unet(model1, model2, lambda _: 1.0, m - 1.0, -m, report=report)


def merge_blocks(model1: DiffusionModel, model2: DiffusionModel, ratios: Mapping[str, float],
                 report: Reporter = None) -> DiffusionModel:
    """Like merge_simple with model1's share chosen per parameter by `block_ratio(name, ratios)`, e.g.
    ratios={"input": 1.0, "middle": 0.5, "out": 0.0}."""
    ratios = dict(ratios)
    return merge_unet(model1, model2, lambda name: 1.0 - block_ratio(name, ratios), report=report)


def merge_clip_simple(clip1: TextEncoderModel, clip2: TextEncoderModel, ratio: float,
                      report: Reporter = None) -> TextEncoderModel:
    """ratio * W1 + (1 - ratio) * W2 over every text-encoder parameter the two stacks share."""
    names, skipped = shared_parameters(clip1.stack, clip2.stack, clip1.family_name, clip2.family_name,
                                       "text encoder")
    _report(report, skipped, "text encoder")
    source = PatchedWeights(clip2._stack, getattr(clip2, "patches", []), clip2.source)
    strength = 1.0 - float(ratio)
    return clip1.with_patches(_merge_patches(names, source, lambda _: strength, -1.0, 1.0))


def merge_sources(patches: List[PatchSpec]) -> List[str]:
    """The files that merge patches draw on (recursively through merged models), in first-use order."""
    found: Dict[str, None] = {}
    seen: set = set()

    def walk(specs: List[PatchSpec]) -> None:
        for _, patch, _ in specs:
            source = getattr(patch, "source", None)
            if isinstance(source, PatchedWeights) and id(source) not in seen:
                seen.add(id(source))
                if source.label:
                    found.setdefault(source.label, None)
                walk(source.patches)

    walk(patches)
    return list(found)
