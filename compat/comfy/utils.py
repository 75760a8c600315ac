"""`comfy.utils`: progress bars, tensor resizing and checkpoint loading for node packs.

ProgressBar reports through the running node's context (the scheduler's events, interrupt checks included).
load_torch_file never unpickles freely: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle
that would build arbitrary objects (docs/architecture.md §8).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch

from compat import _report
from execution.context import current_context

PROGRESS_BAR_ENABLED = True


class ProgressBar:
    """`ProgressBar(total)`; `update(step)` adds, `update_absolute(value, total, preview)` sets. Each update is an
    interrupt point (it raises comfy.model_management.InterruptProcessingException when the job was interrupted);
    outside node execution it only counts."""

    def __init__(self, total: float, node_id: Optional[Any] = None) -> None:
        self.total = total
        self.current = 0
        self.node_id = node_id
        self._ctx = current_context()  # kept for updates made from worker threads

    def update_absolute(self, value: float, total: Optional[float] = None, preview: Any = None) -> None:
        """Set the progress to `value` (never past the total, which `total` replaces when given)."""
        self.total = self.total if total is None else total
        self.current = min(value, self.total)
        _report.report(self.current, self.total, self.node_id, preview, fallback=self._ctx)

    def update(self, value: float) -> None:
        self.update_absolute(self.current + value)


# -- checkpoints ------------------------------------------------------------------------------------------------
def load_torch_file(ckpt: str, safe_load: bool = True, device: Any = None, return_metadata: bool = False) -> Any:
    """A state dict from `.safetensors` (with its metadata when `return_metadata`) or from a torch pickle of plain
    tensors (model_management.file_loading). `safe_load` is accepted for compatibility; loading is always safe."""
    from model_management.file_loading import load_state_dict

    device = "cpu" if device is None else str(torch.device(device))
    if not str(ckpt).lower().endswith((".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".pt2", ".pkl")):
        ckpt_path = str(ckpt)
        sd = torch.load(ckpt_path, map_location=device, weights_only=True)  # odd extension: still weights only
        return (sd, None) if return_metadata else sd
    sd, metadata = load_state_dict(str(ckpt), device=device, with_metadata=True)
    return (sd, metadata or None) if return_metadata else sd


def state_dict_prefix_replace(state_dict: dict, replace_prefix: dict, filter_keys: bool = False) -> dict:
    """Rename keys by prefix, `{old_prefix: new_prefix}`, prefixes applied in order. Renamed entries move out of
    `state_dict`; they land in a new dict (`filter_keys`: only the renamed ones are returned) or back in
    `state_dict` itself, which is then returned."""
    target = {} if filter_keys else state_dict
    for old_prefix, new_prefix in replace_prefix.items():
        matching = [key for key in state_dict if key.startswith(old_prefix)]
        moved = {new_prefix + key[len(old_prefix):]: state_dict.pop(key) for key in matching}
        target.update(moved)
    return target


def save_torch_file(sd: dict, ckpt: str, metadata: Optional[dict] = None) -> None:
    """Write a state dict as .safetensors (tensors made contiguous; metadata values must be strings)."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt), metadata=metadata)


def weight_dtype(sd: dict, prefix: str = "") -> Optional[torch.dtype]:
    """The dtype holding the most parameters among the tensors under `prefix`."""
    counts: dict = {}
    for key, value in sd.items():
        if key.startswith(prefix) and hasattr(value, "dtype"):
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.get) if counts else None


def state_dict_key_replace(state_dict: dict, keys_to_replace: dict) -> dict:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def get_attr(obj: Any, attr: str) -> Any:
    """The attribute at a dotted path (ModuleList indices as plain names)."""
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    """Set the attribute at a dotted path; returns the previous value."""
    *parents, last = attr.split(".")
    for name in parents:
        obj = getattr(obj, name)
    previous = getattr(obj, last)
    setattr(obj, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: torch.Tensor) -> Any:
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def calculate_parameters(sd: dict, prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix) and hasattr(v, "nelement"))


# -- tensors --------------------------------------------------------------------------------------------------
from diffusion.image_ops import (bislerp, common_upscale, lanczos,  # noqa: E402,F401 -- re-exported
                                 repeat_to_batch_size)


def _tile_starts(length: int, tile: int, overlap: int) -> list:
    """Where tiles start along one axis: every `tile - overlap`, the last ones pulled back to end inside."""
    return [max(0, min(length - overlap, start)) for start in range(0, length, tile - overlap)]


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    """How many tiles `tiled_scale` runs over `width x height` (the progress bar's total)."""
    return math.ceil(height / (tile_y - overlap)) * math.ceil(width / (tile_x - overlap))


@torch.inference_mode()
def tiled_scale_multidim(samples: torch.Tensor, function: Any, tile: tuple = (64, 64), overlap: int = 8,
                         upscale_amount: float = 4, out_channels: int = 3, output_device: Any = "cpu",
                         downscale: bool = False, index_formulas: Any = None, pbar: Any = None) -> torch.Tensor:
    """Apply `function` (e.g. an upscaler) tile by tile over the spatial dims of `samples` [B, C, *dims].

    Each tile's output is `upscale_amount` times its size (or 1/that with `downscale`); overlapping outputs are
    blended with linear ramps `overlap * scale` wide at every tile edge, so seams do not show. `index_formulas`
    (one scale per dim, or one for all) maps input positions to output positions where they differ from the scale.
    """
    dims = samples.ndim - 2
    scales = upscale_amount if isinstance(upscale_amount, (list, tuple)) else [upscale_amount] * dims
    formulas = index_formulas if isinstance(index_formulas, (list, tuple)) else [index_formulas or scale
                                                                                  for scale in scales]

    def scaled(value: float, dim: int, formula: bool = False) -> int:
        factor = formulas[dim] if formula else scales[dim]
        return round(value / factor) if downscale else round(value * factor)

    tile = tuple(tile) if isinstance(tile, (list, tuple)) else (tile,) * dims
    out_shape = [scaled(size, d) for d, size in enumerate(samples.shape[2:])]
    output = torch.empty([samples.shape[0], out_channels] + out_shape, device=output_device)
    feather = [scaled(overlap, d) for d in range(dims)]
    for b in range(samples.shape[0]):
        item = samples[b:b + 1]
        if all(size <= t for size, t in zip(item.shape[2:], tile)):  # one tile covers it: no blending needed
            output[b:b + 1] = function(item).to(output_device)
            if pbar is not None:
                pbar.update(1)
            continue
        total = torch.zeros([1, out_channels] + out_shape, device=output_device)
        weight = torch.zeros([1, out_channels] + out_shape, device=output_device)
        grids = [_tile_starts(size, t, overlap) for size, t in zip(item.shape[2:], tile)]
        import itertools  # noqa: PLC0415 - only tiled calls need it

        for starts in itertools.product(*grids):
            piece = item
            out_starts = []
            for d, start in enumerate(starts):
                length = min(tile[d], item.shape[d + 2] - start)
                piece = piece.narrow(d + 2, start, length)
                out_starts.append(scaled(start, d, formula=True))
            result = function(piece).to(output_device)
            mask = torch.ones_like(result)
            for d in range(dims):
                ramp = feather[d]
                extent = mask.shape[d + 2]
                for t in range(min(ramp, extent)):
                    factor = (t + 1) / ramp
                    mask.narrow(d + 2, t, 1).mul_(factor)
                    mask.narrow(d + 2, extent - 1 - t, 1).mul_(factor)
            target_total, target_weight = total, weight
            for d, start in enumerate(out_starts):
                target_total = target_total.narrow(d + 2, start, mask.shape[d + 2])
                target_weight = target_weight.narrow(d + 2, start, mask.shape[d + 2])
            target_total.add_(result * mask)
            target_weight.add_(mask)
            if pbar is not None:
                pbar.update(1)
        output[b:b + 1] = total / weight
    return output


def tiled_scale(samples: torch.Tensor, function: Any, tile_x: int = 64, tile_y: int = 64, overlap: int = 8,
                upscale_amount: float = 4, out_channels: int = 3, output_device: Any = "cpu",
                pbar: Any = None) -> torch.Tensor:
    """`tiled_scale_multidim` over the two image dims [B, C, H, W]."""
    return tiled_scale_multidim(samples, function, (tile_y, tile_x), overlap=overlap,
                                upscale_amount=upscale_amount, out_channels=out_channels,
                                output_device=output_device, pbar=pbar)


# -- diffusers <-> LDM UNet key names (ComfyUI's tables: sub-keys of attentions, transformer blocks, resnets) ------
UNET_MAP_ATTENTIONS = {"proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm.weight",
                       "norm.bias"}
TRANSFORMER_BLOCKS = {f"{part}.{p}" for part in ("norm1", "norm2", "norm3") for p in ("weight", "bias")} | \
    {f"attn{a}.to_{x}.weight" for a in (1, 2) for x in "qkv"} | \
    {f"attn{a}.to_out.0.{p}" for a in (1, 2) for p in ("weight", "bias")} | \
    {f"ff.net.{n}.{p}" for n in ("0.proj", "2") for p in ("weight", "bias")}
UNET_MAP_RESNET = {  # LDM ResBlock sub-key -> diffusers resnet sub-key
    "in_layers.2.weight": "conv1.weight", "in_layers.2.bias": "conv1.bias",
    "emb_layers.1.weight": "time_emb_proj.weight", "emb_layers.1.bias": "time_emb_proj.bias",
    "out_layers.3.weight": "conv2.weight", "out_layers.3.bias": "conv2.bias",
    "skip_connection.weight": "conv_shortcut.weight", "skip_connection.bias": "conv_shortcut.bias",
    "in_layers.0.weight": "norm1.weight", "in_layers.0.bias": "norm1.bias",
    "out_layers.0.weight": "norm2.weight", "out_layers.0.bias": "norm2.bias",
}
UNET_MAP_BASIC = {  # (LDM key, diffusers key) of the UNet's stem, head and embeddings
    *((f"label_emb.0.{i}.{p}", f"{emb}.linear_{n}.{p}") for emb in ("class_embedding", "add_embedding")
      for i, n in ((0, 1), (2, 2)) for p in ("weight", "bias")),
    *((f"input_blocks.0.0.{p}", f"conv_in.{p}") for p in ("weight", "bias")),
    *((f"out.0.{p}", f"conv_norm_out.{p}") for p in ("weight", "bias")),
    *((f"out.2.{p}", f"conv_out.{p}") for p in ("weight", "bias")),
    *((f"time_embed.{i}.{p}", f"time_embedding.linear_{n}.{p}") for i, n in ((0, 1), (2, 2))
      for p in ("weight", "bias")),
}


def unet_to_diffusers(unet_config: dict) -> dict:
    """diffusers key -> LDM key for every parameter of a UNet of ComfyUI config `unet_config` ({} without
    num_res_blocks). Built from the engine's own UNet layout and key map, with the label embedding under both of
    its diffusers names (class_embedding, add_embedding)."""
    if "num_res_blocks" not in unet_config:
        return {}
    from comfy.model_detection import unet_config_from_comfy  # noqa: PLC0415
    from diffusion.unet.model import UNetModel  # noqa: PLC0415
    from model_management.diffusers_folder import ldm_unet_key_to_diffusers, unet_layout  # noqa: PLC0415
    with torch.device("meta"):
        keys = list(UNetModel(unet_config_from_comfy(unet_config)).state_dict())
    per_level, up_attention = unet_layout(keys)
    out = {}
    for key in keys:
        name = ldm_unet_key_to_diffusers(key, per_level, up_attention)
        if name is not None:
            out[name] = key
    for ldm, diffusers in UNET_MAP_BASIC:
        if ldm in keys:
            out[diffusers] = ldm
    return out
