"""Latent nodes: empty latents, and the VAE between pixels and latents (whole or in tiles).

LATENT is `{"samples": [B, C, H/8, W/8], "noise_mask"?, "batch_index"?}` holding raw VAE latents; the model's
latent scale is applied inside the sampler.
"""
from __future__ import annotations

import torch

from nodes.declare import MAX_RESOLUTION, Int, Output, Socket, node

_TEMPORAL_TIP = "Only used by video VAEs; ignored for images."


@node(category="latent", display_name="Empty Latent Image",
      outputs=[Output("LATENT", tooltip="A batch of empty (all-zero) latents to start sampling from.")])
class EmptyLatentImage:
    """Empty latents for a given image size: the starting point of text-to-image."""
    width = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image width in pixels (a multiple of 8).")
    height = Int(512, min=16, max=MAX_RESOLUTION, step=8, tooltip="Image height in pixels (a multiple of 8).")
    batch_size = Int(1, min=1, max=4096, tooltip="How many images to make at once.")

    def run(self, ctx, width, height, batch_size=1):
        return ({"samples": torch.zeros(batch_size, 4, height // 8, width // 8)},)


@node(category="latent/sd3", display_name="EmptySD3LatentImage",
      outputs=[Output("LATENT", tooltip="A batch of empty 16-channel latents.")])
class EmptySD3LatentImage:
    """Empty latents for the 16-channel VAE of SD3 and Flux (8x downscale): their text-to-image starting point."""
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=16, tooltip="Image width in pixels (a multiple of 16).")
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=16, tooltip="Image height in pixels (a multiple of 16).")
    batch_size = Int(1, min=1, max=4096, tooltip="How many images to make at once.")

    def run(self, ctx, width, height, batch_size=1):
        return ({"samples": torch.zeros(batch_size, 16, height // 8, width // 8)},)


def _samples(latent) -> torch.Tensor:
    if not isinstance(latent, dict) or "samples" not in latent:
        raise ValueError("the 'samples' input is not a LATENT (a dict with 'samples')")
    return latent["samples"]


@node(category="latent", display_name="VAE Decode", outputs=[Output("IMAGE", tooltip="The decoded images.")])
class VAEDecode:
    """Turn latents into images with a VAE."""
    samples = Socket("LATENT", tooltip="The latents to decode.")
    vae = Socket("VAE", tooltip="The VAE to decode with (usually the checkpoint's).")

    def run(self, ctx, samples, vae):
        return (vae.decode(_samples(samples), interrupt=ctx.check_interrupt),)


@node(category="latent", display_name="VAE Encode", outputs=[Output("LATENT", tooltip="The encoded latents.")])
class VAEEncode:
    """Turn images into latents with a VAE (for image-to-image). Images are centre-cropped to a multiple of 8."""
    pixels = Socket("IMAGE", tooltip="The images to encode.")
    vae = Socket("VAE", tooltip="The VAE to encode with.")

    def run(self, ctx, pixels, vae):
        return ({"samples": vae.encode(pixels, interrupt=ctx.check_interrupt)},)


@node(category="_for_testing", display_name="VAE Decode (Tiled)",
      outputs=[Output("IMAGE", tooltip="The decoded images.")])
class VAEDecodeTiled:
    """Decode latents tile by tile with blended overlaps: large images in little memory, without seams."""
    samples = Socket("LATENT", tooltip="The latents to decode.")
    vae = Socket("VAE", tooltip="The VAE to decode with.")
    tile_size = Int(512, min=64, max=4096, step=32, tooltip="Tile size in pixels.")
    overlap = Int(64, min=0, max=4096, step=32, tooltip="Overlap between tiles in pixels (blended).")
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip=_TEMPORAL_TIP)
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip=_TEMPORAL_TIP)

    def run(self, ctx, samples, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        f = vae.downscale
        tile = max(8, tile_size // f)
        lap = min(overlap // f, tile // 2)
        return (vae.decode_tiled(_samples(samples), tile=tile, overlap=lap,
                                 progress=lambda d, t: ctx.progress(d, t), interrupt=ctx.check_interrupt),)


@node(category="_for_testing", display_name="VAE Encode (Tiled)",
      outputs=[Output("LATENT", tooltip="The encoded latents.")])
class VAEEncodeTiled:
    """Encode images tile by tile with blended overlaps, for images too large to encode at once."""
    pixels = Socket("IMAGE", tooltip="The images to encode.")
    vae = Socket("VAE", tooltip="The VAE to encode with.")
    tile_size = Int(512, min=64, max=4096, step=64, tooltip="Tile size in pixels.")
    overlap = Int(64, min=0, max=4096, step=32, tooltip="Overlap between tiles in pixels (blended).")
    temporal_size = Int(64, min=8, max=4096, step=4, tooltip=_TEMPORAL_TIP)
    temporal_overlap = Int(8, min=4, max=4096, step=4, tooltip=_TEMPORAL_TIP)

    def run(self, ctx, pixels, vae, tile_size, overlap, temporal_size=64, temporal_overlap=8):
        lap = min(overlap, tile_size // 2)
        return ({"samples": vae.encode_tiled(pixels, tile=tile_size, overlap=lap,
                                             progress=lambda d, t: ctx.progress(d, t),
                                             interrupt=ctx.check_interrupt)},)


@node(category="latent/batch", display_name="LatentBatch",
      outputs=[Output("LATENT", tooltip="samples1 followed by samples2.")])
class LatentBatch:
    """Join two latent batches. samples2 is resized (bilinear, centre crop) to samples1's size when they differ;
    batch indices are concatenated (each batch's own, or 0..n-1), so each item keeps its noise."""
    samples1 = Socket("LATENT", tooltip="The first batch.")
    samples2 = Socket("LATENT", tooltip="The batch appended after it.")

    def run(self, ctx, samples1, samples2):
        from diffusion.image_ops import common_upscale
        first, second = samples1["samples"], samples2["samples"]
        if first.shape[1:] != second.shape[1:]:
            second = common_upscale(second, first.shape[-1], first.shape[-2], "bilinear", "center")
        out = dict(samples1)
        out["samples"] = torch.cat((first, second.to(first.dtype)), dim=0)
        out["batch_index"] = (list(samples1.get("batch_index") or range(first.shape[0]))
                              + list(samples2.get("batch_index") or range(second.shape[0])))
        return (out,)


NODES = [EmptyLatentImage, EmptySD3LatentImage, VAEDecode, VAEEncode, VAEDecodeTiled, VAEEncodeTiled, LatentBatch]
