"""Inpainting nodes: encode an image with a hole for sampling, and give inpainting models their extra input.

Masks are 1 where the image is to be repainted. Pixels are cropped to a multiple of the VAE's factor (centred, as
VAEEncode does) with the mask cropped the same way, so latent cells and mask cells line up. Masked pixels become
mid-grey (0.5) before encoding: that is "unknown" to the VAE, and what inpainting models were trained with.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from nodes.declare import Boolean, Int, Output, Socket, node


def mask_to_image_size(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A MASK ([H,W] or [B,H,W]) as [B, 1, height, width] (bilinear when the size differs)."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a MASK [B, H, W], got {shape}")
    mask = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if mask.shape[-2:] != (height, width):
        mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
    return mask


def crop_to_factor(pixels: torch.Tensor, mask: torch.Tensor, factor: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Centre-crop pixels [B,H,W,C] and mask [B,1,H,W] to a multiple of `factor` in both directions."""
    height, width = (pixels.shape[1] // factor) * factor, (pixels.shape[2] // factor) * factor
    if height == 0 or width == 0:
        raise ValueError(f"pixels ({pixels.shape[2]}x{pixels.shape[1]}) are smaller than the VAE's factor {factor}")
    top, left = (pixels.shape[1] - height) // 2, (pixels.shape[2] - width) // 2
    return (pixels[:, top:top + height, left:left + width],
            mask[:, :, top:top + height, left:left + width])


def grow_mask(mask: torch.Tensor, kernel_side: int) -> torch.Tensor:
    """The rounded mask [B,1,H,W] grown by an all-ones `kernel_side` x `kernel_side` window (the window sum over
    the mask with ceil((n-1)/2) padding, clamped to 0..1, cut back to H x W, rounded). With an even side the mask grows
    one pixel further down/right than up/left, as in the reference node."""
    if kernel_side <= 0:
        return mask.round()
    height, width = mask.shape[-2:]
    window = torch.ones(1, 1, kernel_side, kernel_side, dtype=mask.dtype, device=mask.device)
    summed = F.conv2d(mask.round(), window, padding=math.ceil((kernel_side - 1) / 2))
    return summed.clamp(0.0, 1.0)[:, :, :height, :width].round()


def grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RGB pixels [B,H,W,C] with the rounded mask's region set to 0.5 grey (mask [B|1,1,H,W])."""
    keep = (1.0 - mask.round()).movedim(1, -1)  # [B,H,W,1]
    rgb = pixels[..., :3].float()
    return (rgb - 0.5) * keep + 0.5


def _check_pixels(pixels) -> None:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[-1] < 3:
        shape = list(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"pixels must be an IMAGE [B, H, W, C] with at least 3 channels, got {shape}")


def _batch(mask: torch.Tensor, batch: int) -> torch.Tensor:
    if mask.shape[0] == batch:
        return mask
    if mask.shape[0] == 1:
        return mask.expand(batch, -1, -1, -1)
    raise ValueError(f"the mask has {mask.shape[0]} items but pixels has {batch}: give one mask or one per image")


def prepared(pixels: torch.Tensor, mask: torch.Tensor, factor: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pixels and mask [B,1,H,W] at the same size, batch and crop."""
    _check_pixels(pixels)
    mask = _batch(mask_to_image_size(mask, pixels.shape[1], pixels.shape[2]), pixels.shape[0])
    return crop_to_factor(pixels, mask, factor)


@node(category="latent/inpaint", display_name="VAE Encode (for Inpainting)",
      outputs=[Output("LATENT", tooltip="The encoded image with the masked part greyed out, and the grown mask as "
                                        "its noise mask (only that part is resampled).")])
class VAEEncodeForInpaint:
    """Encode an image for inpainting: the masked part is erased (set to grey) before encoding, and the mask, grown
    by a few pixels so the repaint blends into its surroundings, becomes the latent's noise mask. Sample it at
    denoise 1.0: the erased part has nothing worth keeping."""
    pixels = Socket("IMAGE", tooltip="The image to inpaint.")
    vae = Socket("VAE", tooltip="The VAE to encode with.")
    mask = Socket("MASK", tooltip="Where to repaint (1) and where to keep the image (0).")
    grow_mask_by = Int(6, min=0, max=64, step=1,
                       tooltip="Grow the noise mask with a square window of this side (in pixels) so the "
                               "repainted region blends in; the greyed-out area stays the mask as given.")

    def run(self, ctx, pixels, vae, mask, grow_mask_by=6):
        pixels, mask = prepared(pixels, mask, vae.downscale)
        interrupt = ctx.check_interrupt if ctx is not None else None
        samples = vae.encode(grey_out(pixels, mask), interrupt=interrupt)
        return ({"samples": samples, "noise_mask": grow_mask(mask, grow_mask_by)},)


def _with_concat(conditioning, concat_latent: torch.Tensor, mask: Optional[torch.Tensor], name: str) -> list:
    if not isinstance(conditioning, list):
        raise ValueError(f"{name} is not CONDITIONING (a list of [tensor, options])")
    out = []
    for item in conditioning:
        options = dict(item[1])
        options["concat_latent_image"] = concat_latent
        if mask is not None:
            options["concat_mask"] = mask
        out.append([item[0], options])
    return out


@node(category="conditioning/inpaint", display_name="InpaintModelConditioning",
      outputs=[Output("CONDITIONING", "positive", tooltip="The positive conditioning with the inpainting inputs."),
               Output("CONDITIONING", "negative", tooltip="The negative conditioning with the inpainting inputs."),
               Output("LATENT", "latent", tooltip="The encoded (unerased) image to sample from, with the mask as "
                                                  "noise mask when noise_mask is on.")])
class InpaintModelConditioning:
    """Prepare inpainting with an inpainting model (9 input channels): both conditionings carry the mask and the
    latent of the image with the masked part erased, which such models take as extra input. The latent output is the
    whole image, so denoise below 1 keeps its colours and shapes. Ordinary models ignore the extra input."""
    positive = Socket("CONDITIONING", tooltip="What the repainted part should show.")
    negative = Socket("CONDITIONING", tooltip="What it should not show.")
    vae = Socket("VAE", tooltip="The VAE to encode with (the model's).")
    pixels = Socket("IMAGE", tooltip="The image to inpaint.")
    mask = Socket("MASK", tooltip="Where to repaint (1) and where to keep the image (0).")
    noise_mask = Boolean(True, tooltip="Also limit sampling to the mask (recommended; off lets the model touch up "
                                       "the whole image).")

    def run(self, ctx, positive, negative, vae, pixels, mask, noise_mask=True):
        pixels, mask = prepared(pixels, mask, vae.downscale)
        interrupt = ctx.check_interrupt if ctx is not None else None
        original = vae.encode(pixels, interrupt=interrupt)
        erased = vae.encode(grey_out(pixels, mask), interrupt=interrupt)
        latent = {"samples": original}
        if noise_mask:
            latent["noise_mask"] = mask
        return (_with_concat(positive, erased, mask, "positive"), _with_concat(negative, erased, mask, "negative"),
                latent)


@node(category="conditioning/instructpix2pix", display_name="InstructPixToPixConditioning",
      outputs=[Output("CONDITIONING", "positive", tooltip="The positive conditioning with the image's latent."),
               Output("CONDITIONING", "negative", tooltip="The negative conditioning with the image's latent."),
               Output("LATENT", "latent", tooltip="An empty latent of the image's size to sample from.")])
class InstructPixToPixConditioning:
    """Give an image-conditioned model the image it works from: both conditionings carry its latent, which such
    models (InstructPix2Pix; Flux Canny and Depth, fed a control image) take as extra input channels."""
    positive = Socket("CONDITIONING", tooltip="The positive conditioning.")
    negative = Socket("CONDITIONING", tooltip="The negative conditioning.")
    vae = Socket("VAE", tooltip="The VAE to encode with (the model's).")
    pixels = Socket("IMAGE", tooltip="The image (for Flux Canny / Depth: the edge or depth map).")

    def run(self, ctx, positive, negative, vae, pixels):
        interrupt = ctx.check_interrupt if ctx is not None else None
        latent = vae.encode(pixels, interrupt=interrupt)  # centre-cropped to a multiple of the VAE's factor
        return (_with_concat(positive, latent, None, "positive"), _with_concat(negative, latent, None, "negative"),
                {"samples": torch.zeros_like(latent)})


NODES = [VAEEncodeForInpaint, InpaintModelConditioning, InstructPixToPixConditioning]
