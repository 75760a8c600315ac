"""Upscale models (ESRGAN, Real-ESRGAN, Compact, SwinIR, ... -- whatever spandrel recognises) and tiled upscaling.

Files are read by our own loader (safetensors, or a pickle through `torch.load(weights_only=True)`; anything that
would run code is refused) and only the state dict is handed to spandrel, which detects the architecture from the
key names and shapes. Only image-to-image models (super resolution and restoration) are accepted.

Upscaling runs in tiles so the activations of one tile, not of the whole image, must fit in memory: tiles of `tile`
input pixels overlapping by `overlap`, each upscaled on its own and blended into the output with weights that ramp
linearly across every overlap (the tile edges, where a tile lacks context, count least; the seams vanish). The tile
size is chosen from the free memory of the device and halved when an allocation fails anyway.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from model_management import host_memory
from model_management.file_loading import ModelFileError, load_state_dict

DEFAULT_OVERLAP = 32
MIN_TILE = 32
# Per-tile activation budgets. On a CPU bigger tiles are no faster (convolutions are saturated well below this) and
# memory is shared with the resident models; on a GPU bigger tiles keep it busy. (1 GiB: ~320 px tiles for a 4x
# RRDBNet, ~1/2 of the memory of a whole 512x512 image.)
CPU_TILE_BUDGET = 2 ** 30
GPU_TILE_BUDGET = 8 * 2 ** 30
# the share of the currently free memory one tile may use
FREE_MEMORY_SHARE = 0.5
# what an upscale call needs besides its per-pixel activations (the kernels' scratch; measured for
# RealESRGAN_x4plus on a CPU: 128 and 512 px tiles give 15.5 and 7.7 KB/px, i.e. 136 MB + 7.2 KB/px)
TILE_FIXED_BYTES = 128 * 2 ** 20
# the tile side whose activations the device loader keeps room for when it places an upscale model
ROOM_TILE = 512


class UpscaleModelError(ModelFileError):
    """A file that is not a usable upscale model; the message names the file."""


class UpscaleOutOfMemory(RuntimeError):
    """Even the smallest tile did not fit in memory."""


class UpscaleModel:
    """UPSCALE_MODEL: a spandrel image-to-image model and where it came from. It holds the descriptor itself, or a
    model-manager handle to it (model_management.residency; see `load_resident_upscale_model`)."""

    def __init__(self, descriptor: Any, source: str = "") -> None:
        self._descriptor = descriptor  # spandrel.ImageModelDescriptor, or a ResidentModule handle to one
        self.source = source

    @property
    def descriptor(self) -> Any:
        from diffusion.handles import resolve
        return resolve(self._descriptor)

    @property
    def loader(self) -> Any:
        """The device loader of the model manager that owns the weights (None for a bare descriptor)."""
        return getattr(getattr(self._descriptor, "residency", None), "devices", None)

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    @property
    def architecture(self) -> str:
        return str(self.descriptor.architecture.name)

    @property
    def input_channels(self) -> int:
        return int(self.descriptor.input_channels)

    @property
    def output_channels(self) -> int:
        return int(self.descriptor.output_channels)

    @property
    def multiple_of(self) -> int:
        return int(self.descriptor.size_requirements.multiple_of)

    @property
    def minimum_size(self) -> int:
        return int(self.descriptor.size_requirements.minimum)

    @property
    def tiling(self) -> str:
        """"supported", "discouraged" (window attention: tiles show) or "internal" (the model tiles itself)."""
        return str(self.descriptor.tiling.name).lower()

    @property
    def device(self) -> torch.device:
        return self.descriptor.device

    def __repr__(self) -> str:
        return (f"UpscaleModel({self.architecture} x{self.scale}, {self.input_channels}->{self.output_channels} "
                f"channels, {os.path.basename(self.source)!r})")


# -- loading --------------------------------------------------------------------------------------------------------

def load_upscale_model(path: str, dtype: torch.dtype = torch.float32) -> UpscaleModel:
    """Read a weight file safely and build the model spandrel detects in it, its weights in `dtype` (fp32 where
    the architecture does not support the half dtype asked for)."""
    model = model_from_state_dict(load_state_dict(path, dtype_for=lambda key, stored: dtype), path)
    supported = _supported(model, dtype)
    if supported != dtype:
        model.descriptor.to(dtype=supported)
    return model


def _supported(model: "UpscaleModel", dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float16 and not model.descriptor.supports_half:
        return torch.float32
    if dtype == torch.bfloat16 and not model.descriptor.supports_bfloat16:
        return torch.float32
    return dtype


def load_resident_upscale_model(models: Any, path: str) -> UpscaleModel:
    """`load_upscale_model` through the model manager (model_management.residency.ModelResidency): read once,
    counted in its RAM budget, evicted least recently used, read again transparently when used after eviction;
    weights in the precision policy's dtype for upscale models."""
    dtype = models.precision.upscale

    def build() -> dict:
        descriptor = load_upscale_model(path, dtype).descriptor
        return {"module": descriptor.model, "descriptor": descriptor}

    return UpscaleModel(models.load_module("upscale", path, build, options=(dtype,), part="descriptor"), path)


def model_from_state_dict(state: dict, source: str = "") -> UpscaleModel:
    """Detect the architecture of `state` (spandrel unwraps "params_ema"/"params" and strips "module.")."""
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    name = os.path.basename(source) or "state dict"
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError:
        sample = ", ".join(list(_flat_keys(state))[:4])
        raise UpscaleModelError(f"{name}: not an upscale model of any architecture spandrel knows "
                                f"(its keys begin {sample or '(none)'})") from None
    except (KeyError, RuntimeError, ValueError, AssertionError, IndexError, TypeError) as exc:
        raise UpscaleModelError(f"{name}: the keys look like a known upscale architecture but the weights do not "
                                f"fit it (damaged or unusual file): {exc}") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise UpscaleModelError(f"{name}: a {descriptor.architecture.name} model ({descriptor.purpose}); only "
                                f"image-to-image models (super resolution, restoration) can upscale images")
    if descriptor.purpose not in ("SR", "Restoration"):
        raise UpscaleModelError(f"{name}: a {descriptor.architecture.name} face restoration model; it needs "
                                f"aligned face crops, so it cannot upscale whole images. Use a super-resolution "
                                f"or restoration model")
    return UpscaleModel(descriptor.eval(), source)


def _flat_keys(state: Any, prefix: str = ""):
    for key, value in state.items() if isinstance(state, dict) else ():
        if isinstance(value, dict):
            yield from _flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


# -- memory ---------------------------------------------------------------------------------------------------------

def activation_bytes_per_pixel(model: UpscaleModel, dtype: torch.dtype = torch.float32) -> int:
    """An estimate of the activation memory per input pixel: the widest layer's input plus output at the input
    resolution, plus the last layers' at scale² as many pixels (upsampling comes last in SR networks: what runs
    after it runs on the output's pixels). For RealESRGAN_x4plus it gives 9.1 KB/px against 7.2 KB/px measured
    per added pixel (7.7 KB/px for a whole 512x512 image; the fixed part, TILE_FIXED_BYTES, is separate)."""
    widths = []
    for module in model.descriptor.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            widths.append(module.in_channels + module.out_channels)
        elif isinstance(module, torch.nn.Linear):
            widths.append(module.in_features + module.out_features)
    widest = max(widths + [2 * max(model.input_channels, model.output_channels)])
    tail = max(widths[-2:] + [2 * max(model.input_channels, model.output_channels)])
    element = torch.finfo(dtype).bits // 8
    return element * (widest + tail * model.scale ** 2)


def free_memory(device: torch.device) -> int:
    """Bytes that can be allocated now: free VRAM plus what torch's cache holds on CUDA, MemAvailable on a CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return host_memory.available_bytes()


def choose_tile(model: UpscaleModel, device: torch.device, dtype: torch.dtype = torch.float32,
                available: Optional[int] = None, capped: bool = True) -> int:
    """The largest square tile (input pixels) whose estimated activations fit the budget: a share of the free
    memory, capped per device type unless `capped` is False; a multiple of what the model requires, at least
    MIN_TILE."""
    available = free_memory(device) if available is None else available
    budget = int(available * FREE_MEMORY_SHARE)
    if capped:
        budget = min(budget, GPU_TILE_BUDGET if device.type == "cuda" else CPU_TILE_BUDGET)
    budget -= TILE_FIXED_BYTES
    side = int(math.sqrt(max(budget, 0) / activation_bytes_per_pixel(model, dtype)))
    return _round_tile(max(side, MIN_TILE), model)


def _round_tile(tile: int, model: UpscaleModel) -> int:
    step = max(model.multiple_of, 1)
    return max(step * (tile // step), step * math.ceil(max(MIN_TILE, model.minimum_size) / step))


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or \
            isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# -- tiles ----------------------------------------------------------------------------------------------------------

def tile_spans(length: int, tile: int, overlap: int, multiple_of: int = 1) -> List[Tuple[int, int]]:
    """(start, size) of the tiles along one axis: as few tiles as `tile` allows, all the same size, spread evenly so
    that neighbours overlap by at least `overlap` (at most a quarter of the tile, so no pixel is in three tiles)
    and the last one ends at the border."""
    if length <= tile:
        return [(0, length)]
    overlap = min(overlap, tile // 4)
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    size = multiple_of * math.ceil(size / multiple_of)
    if size >= length:
        return [(0, length)]
    last = length - size
    starts = [round(i * last / (count - 1)) for i in range(count)]
    return [(start, size) for start in starts]


def blend_weights(spans: Sequence[Tuple[int, int]], scale: int) -> List[torch.Tensor]:
    """Per tile, its 1-D blend weight in output pixels: linear ramps across the overlaps with its neighbours,
    1 elsewhere. A neighbour's ramp is the mirror image, so in every overlap the two weights add up to one."""
    weights = []
    for i, (start, size) in enumerate(spans):
        pos = torch.arange(size * scale, dtype=torch.float32) + 0.5
        weight = torch.ones(size * scale)
        if i > 0:
            before = (spans[i - 1][0] + spans[i - 1][1] - start) * scale
            if before > 0:
                weight = weight * (pos / before).clamp(max=1.0)
        if i + 1 < len(spans):
            after = (start + size - spans[i + 1][0]) * scale
            if after > 0:
                weight = weight * ((size * scale - pos) / after).clamp(max=1.0)
        weights.append(weight)
    return weights


def seam_mask(height: int, width: int, tile: int, overlap: int, scale: int, band: int,
              multiple_of: int = 1) -> torch.Tensor:
    """True at output pixels within `band` output pixels of any overlap between tiles (where blending happens);
    for measuring how far from the seams the tiled result matches an untiled one."""
    mask = torch.zeros(height * scale, width * scale, dtype=torch.bool)
    for axis, length in ((0, height), (1, width)):
        spans = tile_spans(length, tile, overlap, multiple_of)
        for (a_start, a_size), (b_start, _) in zip(spans, spans[1:]):
            lo = max(b_start * scale - band, 0)
            hi = (a_start + a_size) * scale + band
            if axis == 0:
                mask[lo:hi, :] = True
            else:
                mask[:, lo:hi] = True
    return mask


# -- upscaling ------------------------------------------------------------------------------------------------------

def compute_dtype(model: UpscaleModel, device: torch.device, loader: Any = None) -> torch.dtype:
    """The precision policy's dtype for upscale models when the device loader places the model (fp32 where the
    architecture does not support it); on a CPU otherwise the weights' dtype (loaded under the policy); on CUDA
    without a loader fp16 where the architecture allows it (bf16 next, else fp32)."""
    if loader is not None and getattr(loader, "active", False):
        from model_management.precision_policy import policy_of
        return _supported(model, policy_of(loader).upscale)
    if device.type != "cuda":
        from diffusion.precision import weights_dtype
        return weights_dtype(model.descriptor.model) if device.type == "cpu" else torch.float32
    if model.descriptor.supports_half:
        return torch.float16
    if model.descriptor.supports_bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def upscale_image(model: UpscaleModel, image: torch.Tensor, tile: Optional[int] = None,
                  overlap: int = DEFAULT_OVERLAP, device: Optional[torch.device] = None,
                  progress: Optional[Callable[[int, int], None]] = None,
                  check_interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """Upscale IMAGE `[B, H, W, C]` (0..1; C = 1, 3 or 4) by the model's scale; float32 on the CPU, same C.

    `tile=None` picks the tile from free memory; a failed allocation halves it and starts over, down to MIN_TILE.
    An alpha channel is resized bicubically (models see colour only). `progress(done, total)` is called after
    every tile and `check_interrupt()` before each.
    """
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image must be [batch, height, width, 1|3|4 channels], got shape {tuple(image.shape)}")
    loader = model.loader
    device = loader.device if loader is not None else (device or _default_device())
    dtype = compute_dtype(model, device, loader)
    planes, alpha = _colour_planes(model, image)
    with _placed(model, loader, device, dtype):
        if model.tiling == "internal":
            tile = max(image.shape[1], image.shape[2])
        elif tile is None:  # window-attention models show tiles: as large as memory allows, uncapped
            tile = choose_tile(model, device, dtype, capped=model.tiling != "discouraged")
        else:
            tile = max(int(tile), 1)
        freed_others = False
        while True:
            try:
                colour = _upscale_planes(model, planes, tile, overlap, device, dtype, progress, check_interrupt)
                break
            except (RuntimeError, MemoryError) as exc:
                if not is_out_of_memory(exc) and not isinstance(exc, MemoryError):
                    raise
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if loader is not None and loader.active and not freed_others:
                    freed_others = True  # first give back other models' device copies (ours is in use)
                    if loader.free(1 << 62):
                        continue
                smaller = _round_tile(tile // 2, model)
                if smaller >= tile or tile <= MIN_TILE:
                    raise UpscaleOutOfMemory(f"not enough memory to upscale even {tile}x{tile} tiles with "
                                             f"{model!r}: {exc}") from None
                tile = smaller
    return _assemble(model, image, colour, alpha)


def _placed(model: UpscaleModel, loader: Any, device: torch.device, dtype: torch.dtype):
    """The network on the compute device for the upscale: through the model manager's device loader when it owns
    the weights (accounted in the VRAM ledger, evicting least recently used models only as far as the weights and
    a moderate tile's activations need), else moved there directly."""
    if loader is None:
        model.descriptor.to(device=device, dtype=dtype)
        return contextlib.nullcontext(model.descriptor)
    room = activation_bytes_per_pixel(model, dtype) * ROOM_TILE ** 2
    if loader.active:
        room = min(room, GPU_TILE_BUDGET, loader.compute.usable_bytes() // 4)
    return loader.use(model.descriptor.model, dtype, extra_bytes=room)


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _colour_planes(model: UpscaleModel, image: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The model's inputs `[N, C_in, H, W]` and the alpha channel `[B, 1, H, W]` (or None)."""
    channels = image.shape[-1]
    colour = image[..., :3] if channels >= 3 else image[..., :1]
    alpha = image[..., 3:4].permute(0, 3, 1, 2) if channels == 4 else None
    colour = colour.permute(0, 3, 1, 2).float()
    if model.input_channels == 3:
        return (colour.expand(-1, 3, -1, -1) if colour.shape[1] == 1 else colour), alpha
    if model.input_channels == 1:  # a greyscale model: every colour channel on its own
        return colour.reshape(-1, 1, *colour.shape[2:]), alpha
    raise ValueError(f"upscale_model {model!r} takes {model.input_channels}-channel images; only 1- and 3-channel "
                     f"models can upscale an IMAGE")


def _assemble(model: UpscaleModel, image: torch.Tensor, colour: torch.Tensor,
              alpha: Optional[torch.Tensor]) -> torch.Tensor:
    batch = image.shape[0]
    if model.input_channels == 1:
        colour = colour.reshape(batch, -1, *colour.shape[2:])
    if image.shape[-1] == 1 and colour.shape[1] == 3:
        colour = colour.mean(dim=1, keepdim=True)  # a grey image stays grey
    elif image.shape[-1] >= 3 and colour.shape[1] == 1:
        colour = colour.expand(-1, 3, -1, -1)
    parts = [colour]
    if alpha is not None:
        size = (colour.shape[2], colour.shape[3])
        parts.append(F.interpolate(alpha.float(), size=size, mode="bicubic", align_corners=False).clamp_(0, 1))
    return torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()


def _upscale_planes(model: UpscaleModel, planes: torch.Tensor, tile: int, overlap: int, device: torch.device,
                    dtype: torch.dtype, progress, check_interrupt) -> torch.Tensor:
    count, _, height, width = planes.shape
    scale = model.scale
    rows = tile_spans(height, tile, overlap, model.multiple_of)
    cols = tile_spans(width, tile, overlap, model.multiple_of)
    row_weights, col_weights = blend_weights(rows, scale), blend_weights(cols, scale)
    # The tile grid is a product of the two axes, so the sum of all weights is a product of two 1-D sums.
    row_sum = torch.zeros(height * scale)
    col_sum = torch.zeros(width * scale)
    for (start, size), weight in zip(rows, row_weights):
        row_sum[start * scale:(start + size) * scale] += weight
    for (start, size), weight in zip(cols, col_weights):
        col_sum[start * scale:(start + size) * scale] += weight
    out = torch.zeros(count, model.output_channels, height * scale, width * scale)
    total, done = count * len(rows) * len(cols), 0
    for n in range(count):
        for (top, tile_h), w_row in zip(rows, row_weights):
            for (left, tile_w), w_col in zip(cols, col_weights):
                if check_interrupt is not None:
                    check_interrupt()
                piece = planes[n:n + 1, :, top:top + tile_h, left:left + tile_w]
                result = model.descriptor(piece.to(device=device, dtype=dtype))
                # (spandrel returns an inference tensor: weight it out of place)
                result = result[0].to(device="cpu", dtype=torch.float32) * (w_row.view(1, -1, 1) * w_col)
                out[n, :, top * scale:(top + tile_h) * scale, left * scale:(left + tile_w) * scale] += result
                del result
                done += 1
                if progress is not None:
                    progress(done, total)
    out.div_(row_sum.view(1, 1, -1, 1)).div_(col_sum.view(1, 1, 1, -1))
    return out.clamp_(0.0, 1.0)
