"""From CONDITIONING to one denoised prediction: areas, masks, strengths, timestep ranges, batching, and CFG.

`prepare_conditioning` turns the CONDITIONING list of a node input into `CondEntry`s fixed for one latent shape
(SDXL's size vector built, areas converted to latent cells, masks resized). `Guidance.denoise(x, sigma)` then
evaluates every entry active at this sigma -- each on its area of the latent, weighted by strength and mask --
batching entries whose tensors line up (the positive and negative usually go through the UNet together), and
combines the positive and negative predictions with classifier-free guidance. ControlNets hook in through
`CondEntry.control`: an object with `residuals(x_in, t, entries, sigma, context=, y=, model=) -> dict | None` in the
UNet's control format (x_in already scaled by c_in; context/y batched as the UNet gets them; model the MODEL).

Inpainting UNets (9 input channels, the RunwayML layout) take `cat([x_in, mask, masked_latent])`: 4 noisy-latent
channels (scaled by c_in), 1 mask channel (1 = repaint), then 4 channels of the masked image's latent multiplied by
the model's latent scale (sockets carry raw latents). `CondEntry.concat` holds those 5 extra channels when the
conditioning names them (`concat_latent_image`, `concat_mask`: InpaintModelConditioning). Otherwise the sampler's
inpaint source is used (`Guidance.set_inpaint_source`: the noise mask and the input latent, as after
VAEEncodeForInpaint; the mask rounded to 0/1 as the reference does), and without a noise mask the model is told
"repaint everything": mask 1 and the latent of a black image (the reference's values, every family), so plain
text-to-image runs on an inpainting checkpoint. The concat is cropped to each entry's area like x and batched with it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from diffusion.controlnet.control_protocol import (ControlCall, comfy_residuals, controls_running,
                                                   distinct_controls, is_comfy_control)
from diffusion.unet.embeddings import timestep_embedding


@dataclass
class CondEntry:
    context: torch.Tensor  # [1, tokens, dim]
    y: Optional[torch.Tensor]  # [1, adm] for SDXL
    area: Optional[Tuple[int, int, int, int]]  # (h, w, top, left) in latent cells
    mask: Optional[torch.Tensor]  # [1, 1, h, w] over the area (or the whole latent)
    strength: float
    sigma_start: float  # active while sigma_end < sigma <= sigma_start (inclusive at the ends)
    sigma_end: float
    control: Any = None
    concat: Optional[torch.Tensor] = None  # [b, 5, H, W] over the whole latent: mask, scaled masked latent
    control_to_uncond: bool = False  # ComfyUI's control_apply_to_uncond: lend the control to the negative
    guidance: Optional[float] = None  # Flux dev's distilled guidance scale (FluxGuidance; 3.5 when unset)

    # ComfyUI's processed conds are dicts; packs' wrappers read a few keys of them (`"control" in cond`).
    _COMFY_KEYS = {"control": "control", "area": "area", "mask": "mask", "strength": "strength"}

    def _comfy_value(self, key: str) -> Any:
        name = self._COMFY_KEYS.get(key) if isinstance(key, str) else None
        return None if name is None else getattr(self, name)

    def __contains__(self, key: object) -> bool:
        return self._comfy_value(key) is not None

    def __getitem__(self, key: str) -> Any:
        value = self._comfy_value(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._comfy_value(key)
        return default if value is None else value


# The scaled latent of a flat mid-grey image (0 in the VAE's -1..1 pixel range) under the SD1/SD2 VAE, per channel
# (approximate, as published for that VAE): what an inpainting model is given as "masked image" where nothing is
# known. Families without a known value (SDXL's VAE) get zeros.
# The 4-channel latent of an all-black ("nothing known") image, which the reference feeds every inpainting model
# (SD1, SD2 and SDXL alike) as its masked image when there is no noise mask.
BLANK_INPAINT_LATENT = (0.8223, -0.6876, 0.6364, 0.1380)
CONCAT_CHANNELS = 5  # mask (1) + masked-image latent (4)


def _resize(t: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    if tuple(t.shape[-2:]) == tuple(hw):
        return t
    return F.interpolate(t, size=hw, mode="bilinear", align_corners=False)


def concat_mask(mask: torch.Tensor, latent_hw: Tuple[int, int]) -> torch.Tensor:
    """A MASK ([H,W], [B,H,W] or [B,1,H,W], any resolution) as [B, 1, h, w] at the latent's resolution."""
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    return _resize(mask[:, :1], latent_hw)


def unet_in_channels(model: Any) -> Optional[int]:
    """The latent channels the network takes (Flux's config counts its 2 x 2 patches: it says latent_channels)."""
    config = getattr(getattr(model, "unet", None), "config", None)
    value = getattr(config, "latent_channels", None) or getattr(config, "in_channels", None)
    return None if value is None else int(value)


FLUX_IMAGE_EXTRA, FLUX_FILL_EXTRA = 16, 80  # Flux Canny/Depth: + the control image's latent; Fill: + 8x8 mask


def extra_channels(in_channels: Optional[int], latent_channels: int) -> int:
    """How many channels the network takes beyond the latent's: 0 for plain models, 5 for SD inpainting ones, 16
    or 80 for Flux's Canny/Depth and Fill models (16-channel latents)."""
    if in_channels is None or in_channels == latent_channels:
        return 0
    extra = in_channels - int(latent_channels)
    allowed = (FLUX_IMAGE_EXTRA, FLUX_FILL_EXTRA) if latent_channels == 16 else (CONCAT_CHANNELS,)
    if extra not in allowed:
        raise ValueError(f"the latent has {latent_channels} channels but this model takes {in_channels}: make the "
                         f"latent for the model's family (EmptySD3LatentImage for SD3's 16 channels, "
                         f"EmptyLatentImage for SD1/SDXL's 4) or encode the image with the model's VAE")
    return extra


def _flux_concat(opts: dict, latent_shape: torch.Size, model: Any, extra: int) -> torch.Tensor:
    """Flux's extra input channels: the conditioning image's latent (zeros without one) in the model's latent
    format, and for Fill models the mask at pixel resolution folded into 64 channels (8 x 8 pixels per latent cell)
    after it. Without a concat_mask the Fill channels are left off here: the sampler completes them with its noise
    mask (ones without one), as the reference falls back to the denoise mask (`Guidance._concat_for`)."""
    b, c, h, w = (int(n) for n in latent_shape)
    image = opts.get("concat_latent_image")
    image = torch.zeros(1, c, h, w) if image is None else _resize(image.float(), (h, w))
    image = model.latent_format.process_in(image)
    mask = opts.get("concat_mask")
    if extra == FLUX_IMAGE_EXTRA or mask is None:
        return image
    mask = mask.float()
    mask = mask[None, None] if mask.ndim == 2 else (mask[:, None] if mask.ndim == 3 else mask.mean(1, True))
    return with_fill_mask(image, mask)


def with_fill_mask(image: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """A Flux Fill model's extra channels: the image latent [B, 16, h, w] and the mask ([B, 1, *, *] at any
    resolution, None: ones) resized to the pixels (bilinear) and folded into 64 channels (channel 8i + j is pixel
    (i, j) of each latent cell), batched alike."""
    h, w = image.shape[-2:]
    mask = torch.ones(1, 1, h * 8, w * 8) if mask is None else _resize(mask.float(), (h * 8, w * 8))
    mask = F.pixel_unshuffle(mask, 8)
    if mask.shape[0] != image.shape[0]:
        batch = max(mask.shape[0], image.shape[0])
        mask, image = _to_batch(mask, batch), _to_batch(image, batch)
    return torch.cat([image, mask.to(image)], dim=1)


def _concat(opts: dict, latent_shape: torch.Size, model: Any) -> Optional[torch.Tensor]:
    """The inpainting channels an entry names (InpaintModelConditioning), or None to use the sampler's source."""
    image = opts.get("concat_latent_image")
    in_channels, latent_channels = unet_in_channels(model), int(latent_shape[1])
    if latent_channels == 16 and in_channels is not None and \
            in_channels - latent_channels in (FLUX_IMAGE_EXTRA, FLUX_FILL_EXTRA):
        return _flux_concat(opts, latent_shape, model, in_channels - latent_channels)
    if image is None or not extra_channels(in_channels, latent_channels):
        return None
    latent_hw = (int(latent_shape[2]), int(latent_shape[3]))
    image = image.float()
    if image.ndim != 4 or image.shape[1] != latent_shape[1]:
        raise ValueError(f"concat_latent_image has shape {list(image.shape)}; expected a latent "
                         f"[B, {latent_shape[1]}, H, W] (encode the image with the model's VAE)")
    image = _resize(image, latent_hw) * float(model.latent_scale)
    mask = opts.get("concat_mask")
    mask = concat_mask(mask, latent_hw).round() if mask is not None else torch.ones_like(image[:, :1])
    if mask.shape[0] != image.shape[0]:
        batch = max(mask.shape[0], image.shape[0])
        mask, image = _to_batch(mask, batch), _to_batch(image, batch)
    return torch.cat([mask, image], dim=1)


def _to_batch(t: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat (cyclically) or cut along the batch axis to `batch` items."""
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    return t.repeat(math.ceil(batch / t.shape[0]), *([1] * (t.ndim - 1)))[:batch]


def _sdxl_y(opts: dict, latent_hw: Tuple[int, int], adm: int, refiner: bool, seed: Optional[int]) -> torch.Tensor:
    pooled = opts.get("pooled_output")
    if opts.get("unclip_conditioning"):  # revision: the image embedding stands in for the pooled text
        from diffusion.sampling.unclip import unclip_pooled
        pooled = unclip_pooled(opts["unclip_conditioning"], seed, adm - (5 if refiner else 6) * 256)  # 1280
    if pooled is None:
        raise ValueError("SDXL needs a pooled text embedding: encode the prompt with an SDXL CLIP")
    height, width = latent_hw[0] * 8, latent_hw[1] * 8
    if refiner:
        ids = [opts.get("height", height), opts.get("width", width), opts.get("crop_h", 0), opts.get("crop_w", 0),
               opts.get("aesthetic_score", 6.0)]
    else:
        ids = [opts.get("height", height), opts.get("width", width), opts.get("crop_h", 0), opts.get("crop_w", 0),
               opts.get("target_height", height), opts.get("target_width", width)]
    embedded = timestep_embedding(torch.tensor(ids, dtype=torch.float32), 256).reshape(1, -1)
    y = torch.cat([pooled.float().reshape(1, -1), embedded], dim=1)
    if y.shape[1] != adm:
        raise ValueError(f"the conditioning gives a {y.shape[1]}-wide size vector but the model expects {adm}: "
                         f"the prompt was encoded with a different model family's CLIP")
    return y


DEFAULT_FLUX_GUIDANCE = 3.5  # what a guidance-distilled model gets without FluxGuidance (ComfyUI's default)


def _pooled_y(opts: dict, width: int) -> torch.Tensor:
    """A diffusion transformer's y: the pooled text vector itself (SD3: CLIP-L + CLIP-G, Flux: CLIP-L)."""
    pooled = opts.get("pooled_output")
    if pooled is None:
        raise ValueError(f"this model needs a pooled text embedding ({width} wide): encode the prompt with its "
                         f"CLIP (CLIP-L and CLIP-G)")
    pooled = pooled.float().reshape(1, -1)
    if pooled.shape[1] != width:
        raise ValueError(f"the pooled text embedding is {pooled.shape[1]}-wide but this model expects {width}: "
                         f"the prompt was encoded with a different model family's CLIP")
    return pooled


def _area(opts: dict, latent_hw: Tuple[int, int]) -> Optional[Tuple[int, int, int, int]]:
    area = opts.get("area")
    if area is None:
        return None
    H, W = latent_hw
    if area[0] == "percentage":
        _, h, w, top, left = area
        h, w, top, left = round(h * H), round(w * W), round(top * H), round(left * W)
    else:
        h, w, top, left = area
    top, left = min(max(0, int(top)), H - 1), min(max(0, int(left)), W - 1)
    h, w = max(1, min(int(h), H - top)), max(1, min(int(w), W - left))
    return h, w, top, left


def _mask(opts: dict, latent_hw: Tuple[int, int], area: Optional[tuple]) -> tuple:
    mask = opts.get("mask")
    if mask is None:
        return None, area
    mask = mask.float()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    mask = F.interpolate(mask[:1].unsqueeze(1), size=latent_hw, mode="bilinear", align_corners=False)
    mask = mask * float(opts.get("mask_strength", 1.0))
    if opts.get("set_area_to_bounds"):
        nonzero = (mask[0, 0] > 0).nonzero()
        if len(nonzero):
            top, left = nonzero.min(0).values.tolist()
            bottom, right = nonzero.max(0).values.tolist()
            area = (bottom - top + 1, right - left + 1, top, left)
    if area is not None:
        h, w, top, left = area
        mask = mask[:, :, top:top + h, left:left + w]
    return mask, area


def prepare_conditioning(conditioning: list, latent_shape: torch.Size, model: Any,
                         seed: Optional[int] = None) -> List[CondEntry]:
    """CONDITIONING -> entries fixed for a latent of `latent_shape` [B, C, H, W] and this MODEL; `seed` (the
    sampler's) seeds what conditioning draws itself (unCLIP's noise augmentation)."""
    if not isinstance(conditioning, list):
        raise ValueError("expected CONDITIONING (a list of [tensor, options])")
    latent_hw = (int(latent_shape[2]), int(latent_shape[3]))
    config = model.unet.config
    sampling = model.model_sampling
    entries = []
    pooled_width = getattr(config, "pooled_in", 0)  # diffusion transformers take the pooled text as y directly
    for item in conditioning:
        cond, opts = item[0], item[1]
        if cond.shape[-1] != config.context_dim:
            raise ValueError(f"the prompt embedding is {cond.shape[-1]}-wide but this model expects "
                             f"{config.context_dim}: the CLIP and the MODEL come from different families")
        y = None
        if pooled_width:
            y = _pooled_y(opts, pooled_width)
        elif config.adm_in_channels:
            y = _sdxl_y(opts, latent_hw, config.adm_in_channels, model.family.name == "sdxl_refiner", seed)
        area = _area(opts, latent_hw)
        mask, area = _mask(opts, latent_hw, area)
        start = sampling.percent_to_sigma(float(opts.get("start_percent", 0.0)))
        end = sampling.percent_to_sigma(float(opts.get("end_percent", 1.0)))
        guidance = float(opts.get("guidance", DEFAULT_FLUX_GUIDANCE)) if getattr(config, "guidance_embed", False) \
            else None
        entries.append(CondEntry(cond.float(), y, area, mask, float(opts.get("strength", 1.0)), start, end,
                                 opts.get("control"), _concat(opts, latent_shape, model),
                                 bool(opts.get("control_apply_to_uncond", False)), guidance))
    return entries


def lend_controls_to_uncond(positive: List[CondEntry], negative: List[CondEntry]) -> List[CondEntry]:
    """ComfyUI's rule for controls applied to the positive only (Apply ControlNet (OLD) sets
    control_apply_to_uncond): when no whole-latent negative entry has a control, the k-th whole-latent positive
    control is given to whole-latent negative entry k, cycling (with more controls than entries, the last one
    given to an entry is the one it keeps, as in the reference), so both halves of CFG see it. Returns the new
    negative list; the inputs are not modified."""
    lenders = [e.control for e in positive if e.control_to_uncond and e.area is None and e.control is not None]
    whole = [(i, e) for i, e in enumerate(negative) if e.area is None]
    if not lenders or not whole or any(e.control is not None for _, e in whole):
        return list(negative)
    out = list(negative)
    for k, control in enumerate(lenders):
        index, entry = whole[k % len(whole)]
        out[index] = dataclasses.replace(entry, control=control)
    return out


def _feather(h: int, w: int, area: tuple, latent_hw: tuple, rr: int = 8) -> torch.Tensor:
    """Soft edges where an area lies inside the latent, so area conditioning blends instead of cutting."""
    weight = torch.ones(1, 1, h, w)
    _, _, top, left = area
    rr = min(rr, h // 4, w // 4)
    for t in range(rr):
        fade = (t + 1) / rr
        if top != 0:
            weight[:, :, t, :] *= fade
        if top + h < latent_hw[0]:
            weight[:, :, h - 1 - t, :] *= fade
        if left != 0:
            weight[:, :, :, t] *= fade
        if left + w < latent_hw[1]:
            weight[:, :, :, w - 1 - t] *= fade
    return weight


class Guidance:
    """Evaluates a MODEL on prepared conditioning: denoise(x, sigma) -> x0 prediction (CFG applied)."""

    def __init__(self, model: Any, positive: List[CondEntry], negative: Optional[List[CondEntry]], cfg: float,
                 combine: Optional[Callable] = None) -> None:
        self.model = model
        self.sampling = model.model_sampling
        self.positive = positive
        self.negative = lend_controls_to_uncond(positive, negative) if negative else []
        self.cfg = cfg
        self.combine = combine  # (cond, uncond, cfg, x, sigma) -> denoised; default plain CFG
        self.uncond_denoised: Optional[torch.Tensor] = None
        self.calls = 0
        self.inpaint_source: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None
        self._default_concat: Optional[torch.Tensor] = None
        self.full_shape: Optional[tuple] = None
        self.in_channels = unet_in_channels(model)
        self.sample_sigmas: Optional[torch.Tensor] = None  # the whole schedule, when the sampler run sets it
        self.options_override: Optional[dict] = None  # model_options for these calls instead of the MODEL's

    def set_inpaint_source(self, latent: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
        """The sampler's input latent (scaled) and noise mask ([B, 1|C, H, W] at latent size, or None): what an
        inpainting UNet sees for entries without their own concat."""
        self.inpaint_source = (latent, mask)
        self._default_concat = None

    def default_concat(self, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """[B, 5, H, W] for a full latent of `shape` [B, C, H, W]: the noise mask and the input latent when there
        is a mask, else mask 1 and the grey latent (see the module docstring). Dtype and device of `like`."""
        cached = self._default_concat
        if cached is not None and cached.shape[0] == shape[0] and tuple(cached.shape[2:]) == tuple(shape[2:]):
            return cached
        latent, mask = self.inpaint_source if self.inpaint_source is not None else (None, None)
        if mask is not None and latent is not None:
            concat = torch.cat([mask[:, :1].float().round(), latent.float()], dim=1)  # the model sees 0 or 1
        else:
            b, c, h, w = shape
            blank = BLANK_INPAINT_LATENT if c == len(BLANK_INPAINT_LATENT) else (0.0,) * c
            latent = torch.tensor(blank, dtype=torch.float32).view(1, c, 1, 1).expand(b, c, h, w)
            concat = torch.cat([torch.ones(b, 1, h, w), latent], dim=1)
        self._default_concat = _to_batch(concat, shape[0]).to(like)
        return self._default_concat

    def model_options(self) -> dict:
        """The MODEL's ComfyUI-style hooks (model_management/patcher_face.py), or `options_override` (a pack's
        calc_cond_batch with its own model_options); {} for models without them."""
        if self.options_override is not None:
            return self.options_override
        return getattr(self.model, "model_options", None) or {}

    def uses_uncond(self) -> bool:
        if not self.negative:
            return False
        return not math.isclose(self.cfg, 1.0) or bool(self.model_options().get("disable_cfg1_optimization"))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        options = self.model_options()
        lists = [self.positive] + ([self.negative] if self.uses_uncond() else [])
        preds = self.predict(x, sigma, lists)
        hooked = any(k in options for k in ("sampler_pre_cfg_function", "sampler_cfg_function",
                                            "sampler_post_cfg_function"))
        if not hooked:
            cond = preds[0]
            uncond = preds[1] if len(preds) > 1 else None
            self.uncond_denoised = uncond
            if uncond is None:
                return cond
            if self.combine is not None:
                return self.combine(cond, uncond, self.cfg, x, sigma)
            return uncond + (cond - uncond) * self.cfg
        return self._hooked_cfg(x, sigma, preds, options)

    def _hooked_cfg(self, x: torch.Tensor, sigma: torch.Tensor, preds: List[torch.Tensor],
                    options: dict) -> torch.Tensor:
        """CFG through the model's pre-cfg, cfg and post-cfg functions, with the arguments ComfyUI gives them
        (a skipped unconditional prediction is zeros, as there)."""
        if len(preds) == 1:
            preds = [preds[0], torch.zeros_like(x)]
        model = getattr(self.model, "model", self.model)
        conds = [self.positive, self.negative if self.uses_uncond() else None]
        for fn in options.get("sampler_pre_cfg_function", ()):
            preds = fn({"conds": conds, "conds_out": preds, "cond_scale": self.cfg, "timestep": sigma, "input": x,
                        "sigma": sigma, "model": model, "model_options": options})
        cond, uncond = preds[0], preds[1]
        self.uncond_denoised = uncond
        cfg_fn = options.get("sampler_cfg_function")
        if cfg_fn is not None:
            result = x - cfg_fn({"cond": x - cond, "uncond": x - uncond, "cond_scale": self.cfg, "timestep": sigma,
                                 "input": x, "sigma": sigma, "cond_denoised": cond, "uncond_denoised": uncond,
                                 "model": model, "model_options": options, "input_cond": conds[0],
                                 "input_uncond": conds[1]})
        elif self.combine is not None:
            result = self.combine(cond, uncond, self.cfg, x, sigma)
        else:
            result = uncond + (cond - uncond) * self.cfg
        for fn in options.get("sampler_post_cfg_function", ()):
            result = fn({"denoised": result, "cond": conds[0], "uncond": conds[1], "cond_scale": self.cfg,
                         "model": model, "uncond_denoised": uncond, "cond_denoised": cond, "sigma": sigma,
                         "model_options": options, "input": x})
        return result

    def predict(self, x: torch.Tensor, sigma: torch.Tensor, lists: List[List[CondEntry]]) -> List[torch.Tensor]:
        """The weighted average x0 prediction of each list of entries (areas and masks blended)."""
        self.calls += 1
        self.full_shape = tuple(x.shape)
        latent_hw = (x.shape[2], x.shape[3])
        s = float(sigma.reshape(-1)[0])
        totals = [torch.zeros_like(x) for _ in lists]
        counts = [torch.full_like(x, 1e-37) for _ in lists]
        jobs = []  # (list index, entry, x crop, weight, area)
        for index, entries in enumerate(lists):
            for entry in entries:
                if not (entry.sigma_end - 1e-6 <= s <= entry.sigma_start + 1e-6):
                    continue
                area = entry.area or (latent_hw[0], latent_hw[1], 0, 0)
                h, w, top, left = area
                crop = x[:, :, top:top + h, left:left + w]
                weight = torch.full((1, 1, h, w), entry.strength, dtype=x.dtype, device=x.device)
                if entry.mask is not None:
                    weight = weight * entry.mask.to(x)
                if entry.area is not None:
                    weight = weight * _feather(h, w, area, latent_hw).to(x)
                jobs.append((index, entry, crop, weight, area))
        for group in _groups(jobs):
            outs = self._forward(group, sigma, sigma.reshape(-1)[:1].expand(x.shape[0]) if sigma.numel() == 1
                                 else sigma)
            for (index, entry, crop, weight, area), out in zip(group, outs):
                h, w, top, left = area
                totals[index][:, :, top:top + h, left:left + w] += out * weight
                counts[index][:, :, top:top + h, left:left + w] += weight
        return [t / c for t, c in zip(totals, counts)]

    def _forward(self, group: list, sigma: torch.Tensor, batch_sigma: torch.Tensor) -> List[torch.Tensor]:
        """One model call for a group of entries with matching shapes (batched on the batch axis)."""
        batch = group[0][2].shape[0]
        x = torch.cat([job[2] for job in group])
        sig = sigma.reshape(-1)[:1].expand(x.shape[0]) if sigma.numel() == 1 else sigma.repeat(len(group))
        context = torch.cat([job[1].context.expand(batch, -1, -1) for job in group]).to(x)
        y = None
        if group[0][1].y is not None:
            y = torch.cat([job[1].y.expand(batch, -1) for job in group]).to(x)
        concat = self._concat_for(group, batch) if extra_channels(self.in_channels, x.shape[1]) else None
        guidance = None
        if group[0][1].guidance is not None:
            guidance = torch.tensor([job[1].guidance for job in group], device=x.device).repeat_interleave(batch)
        cond_or_uncond = [job[0] for job in group]
        transformer_options = self._transformer_options(cond_or_uncond, batch_sigma)
        control = None
        top = group[0][1].control
        if top is not None:
            call = ControlCall(x=x, sigma=sig, x_in=self.sampling.calculate_input(sig, x),
                               timestep=self.sampling.timestep(sig).float(), context=context, y=y, concat=concat,
                               batched_number=len(group), transformer_options=transformer_options,
                               model=self.model,
                               num_input_blocks=getattr(self.model.unet.config, "num_input_blocks", 0))
            control = _control_residuals(top, call, [job[1] for job in group])
        denoised = self._apply(x, sig, context, y, control, concat, cond_or_uncond, transformer_options, guidance)
        return list(denoised.split(batch))

    def _transformer_options(self, cond_or_uncond: List[int], batch_sigma: torch.Tensor) -> dict:
        """This call's transformer_options: the model's, plus which prediction each chunk is for (0 conditional,
        1 unconditional), the sigmas of the batch and of the whole run."""
        transformer_options = dict(self.model_options().get("transformer_options") or {})
        transformer_options["cond_or_uncond"] = list(cond_or_uncond)
        transformer_options["sigmas"] = batch_sigma
        if self.sample_sigmas is not None:
            transformer_options["sample_sigmas"] = self.sample_sigmas
        return transformer_options

    def entry_lists(self) -> List[List[CondEntry]]:
        """Every list of entries this guidance evaluates (subclasses with more predictions add theirs)."""
        return [self.positive, self.negative]

    def controls_running(self):
        """The run bracket of every control on the entries (ComfyUI's pre_run / cleanup), for a sampler run."""
        return controls_running(distinct_controls(self.entry_lists()), self.model)

    def _apply(self, x: torch.Tensor, sig: torch.Tensor, context: torch.Tensor, y: Optional[torch.Tensor],
               control: Optional[dict], concat: Optional[torch.Tensor], cond_or_uncond: List[int],
               transformer_options: dict, guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """model.apply_model with this call's transformer_options, through the model's `model_function_wrapper`
        when it has one."""
        options = self.model_options()
        c = {"c_crossattn": context, "c_concat": concat, "y": y, "control": control,
             "transformer_options": transformer_options}
        extra = {}
        if guidance is not None:
            c["guidance"] = extra["guidance"] = guidance
        wrapper = options.get("model_function_wrapper")
        if wrapper is None:
            return self.model.apply_model(x, sig, context, y=y, control=control, concat=concat,
                                          transformer_options=transformer_options, **extra)
        base = self.model.model
        return wrapper(base.apply_model, {"input": x, "timestep": sig, "c": c, "cond_or_uncond": list(cond_or_uncond)})

    def _concat_for(self, group: list, batch: int) -> torch.Tensor:
        """The inpainting channels of each job, cropped to its area like x and batched like x."""
        parts = []
        for _, entry, crop, _, (h, w, top, left) in group:
            source = entry.concat
            if source is None:
                if self.full_shape is None:
                    raise ValueError("inpainting model: the latent shape is unknown (call predict first)")
                source = self.default_concat(self.full_shape, crop)
            elif source.shape[1] == FLUX_IMAGE_EXTRA and crop.shape[1] == 16 and \
                    self.in_channels == 16 + FLUX_FILL_EXTRA:  # Flux Fill without a concat_mask
                noise_mask = self.inpaint_source[1] if self.inpaint_source is not None else None
                source = with_fill_mask(source, None if noise_mask is None else noise_mask.float().mean(1, True))
            parts.append(_to_batch(source[:, :, top:top + h, left:left + w], batch).to(crop))
        return torch.cat(parts)


def _groups(jobs: list) -> list:
    """Jobs that can share a UNet call: same crop size, same token count, same control object."""
    groups: Dict[tuple, list] = {}
    for job in jobs:
        entry, crop = job[1], job[2]
        key = (tuple(crop.shape), entry.context.shape[1], id(entry.control), entry.y is None, entry.guidance is None)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def _control_residuals(control: Any, call: ControlCall, entries: List[CondEntry]) -> Optional[dict]:
    """The group's ControlNet residuals in the UNet's convention, from Tessera's runtime or a ComfyUI-style control."""
    if is_comfy_control(control):
        return comfy_residuals(control, call)
    return control.residuals(call.x_in, call.timestep, entries, call.sigma, context=call.context, y=call.y,
                             model=call.model, call=call)


def rescale_cfg(multiplier: float) -> Callable:
    """RescaleCFG (Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", §3.4):
    rescale the guided noise prediction to the conditional prediction's standard deviation, then mix."""
    def combine(cond: torch.Tensor, uncond: torch.Tensor, cfg: float, x: torch.Tensor,
                sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x)
        eps_c, eps_u = (x - cond) / s, (x - uncond) / s
        eps = eps_u + (eps_c - eps_u) * cfg
        dims = list(range(1, x.ndim))
        scaled = eps * (eps_c.std(dim=dims, keepdim=True) / eps.std(dim=dims, keepdim=True).clamp_min(1e-12))
        eps = multiplier * scaled + (1.0 - multiplier) * eps
        return x - eps * s
    return combine


def cfg_norm(strength: float) -> Callable:
    """CFGNorm, a post-CFG function: where the guided denoised latent's per-pixel norm over channels exceeds the
    conditional one's, scale it down to that norm (never up), then multiply by `strength`."""
    def post_cfg(args: dict) -> torch.Tensor:
        cond, guided = args["cond_denoised"], args["denoised"]
        scale = (cond.norm(dim=1, keepdim=True) / (guided.norm(dim=1, keepdim=True) + 1e-8)).clamp(0.0, 1.0)
        return guided * scale * strength
    return post_cfg
