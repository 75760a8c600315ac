"""ComfyUI's "fp8 scaled" files: float8 weights with a scale per layer, turned back into ordinary weights on load.

Released files such as `sd3.5_large_fp8_scaled.safetensors` or `t5xxl_fp8_e4m3fn_scaled.safetensors` store each
large linear weight as float8_e4m3fn divided by a scale, with the scale next to it: `<layer>.scale_weight` in the
first format (marked by a `scaled_fp8` key per model), `<layer>.weight_scale` in the later "mixed precision" one.
A scale is a scalar (per tensor) or one value per output row. `<layer>.scale_input` / `input_scale` (for fp8
matrix multiplies on recent GPUs) and the format markers carry no weight and are dropped.

The weight is `stored.float() * scale`, converted to the dtype its part computes in -- the same values ComfyUI's
loader computes with, held dequantized: one copy of each weight in the compute dtype, as every other file.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
MARKER = "scaled_fp8"
FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def weight_key(scale_key: str) -> Optional[str]:
    for suffix in SCALE_SUFFIXES:
        if scale_key.endswith(suffix):
            return scale_key[:-len(suffix)] + ".weight"
    return None


def is_scaled(keys) -> bool:
    """Whether a file's keys are those of a scaled fp8 file."""
    return any(k.endswith(SCALE_SUFFIXES) for k in keys)


def reading_plan(keys, dtype_for: Optional[Callable], skip: str) -> Tuple[Callable, Dict[str, str]]:
    """(dtype_for to read the file with, {weight key: its scale key}): scaled weights and their scales are read as
    stored (dequantized afterwards), markers and input scales not at all (`skip`: the loader's do-not-read mark)."""
    scales = {}
    for key in keys:
        weight = weight_key(key)
        if weight is not None and weight in keys:
            scales[weight] = key
    scale_keys = set(scales.values())

    def read_as(key: str, stored: torch.dtype):
        if key.endswith(DROPPED_SUFFIXES) or key == MARKER or key.endswith("." + MARKER):
            return skip
        if key in scales or key in scale_keys:
            return stored
        return dtype_for(key, stored) if dtype_for is not None else stored
    return read_as, scales


def dequantize(state: Dict[str, torch.Tensor], scales: Dict[str, str], dtype_for: Optional[Callable],
               skip: str) -> None:
    """Replace each scaled weight in `state` by stored * scale in the dtype `dtype_for` gives it (as if the file
    held it in float32), dropping the scales; one weight at a time. ValueError for a format it does not read."""
    for weight_name, scale_name in scales.items():
        stored = state.pop(weight_name, None)
        scale = state.pop(scale_name, None)
        if stored is None or scale is None:
            continue
        if stored.dtype not in FLOAT8:
            raise ValueError(f"{weight_name} is stored as {stored.dtype} with a scale; only float8 "
                                 f"scaled weights are supported (not int8 or 4-bit formats)")
        target = dtype_for(weight_name, torch.float32) if dtype_for is not None else torch.float32
        if target == skip:
            continue
        factor = scale.float()
        if factor.numel() > 1:
            if factor.numel() != stored.shape[0]:
                raise ValueError(f"{scale_name} holds {factor.numel()} scales for a weight of "
                                     f"{stored.shape[0]} rows")
            factor = factor.reshape(-1, *([1] * (stored.ndim - 1)))
        state[weight_name] = (stored.float() * factor).to(target)
