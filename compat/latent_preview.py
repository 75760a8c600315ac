"""`latent_preview`: sampling previews as packs drive them -- `prepare_callback(model, steps)` gives the per-step
callback their own sampling loops pass to k-diffusion functions (progress, interrupt checks and, when the job or
server asks for previews, an image), `get_previewer(device, latent_format)` the previewer itself.

Latent2RGB is the engine's own linear projection (diffusion/latent_preview.py); TAESD previews need its decoder file
in models/vae_approx and are used only when the method asks for them.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from PIL import Image

from comfy.cli_args import LatentPreviewMethod, args
from comfy.taesd.taesd import TAESD  # noqa: F401 - packs import it from here
from compat import _runtime
from diffusion.latent_preview import project_to_rgb

MAX_PREVIEW_RESOLUTION = 512


def preview_to_image(image: torch.Tensor) -> Image.Image:
    """[H, W, 3] in [-1, 1] -> PIL image."""
    pixels = ((image.float() + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels.cpu().numpy())


class LatentPreviewer:
    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        raise NotImplementedError

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple:
        return preview_format, self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION


class Latent2RGBPreviewer(LatentPreviewer):
    """A linear projection of the latent channels to colour: cheap enough for every step."""

    def __init__(self, latent_rgb_factors: list, latent_rgb_factors_bias: Optional[list] = None,
                 latent_rgb_factors_reshape: Any = None):
        self.latent_rgb_factors = latent_rgb_factors
        self.latent_rgb_factors_bias = latent_rgb_factors_bias
        self.latent_rgb_factors_reshape = latent_rgb_factors_reshape

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        first = x0[0]
        if self.latent_rgb_factors_reshape is not None:
            first = self.latent_rgb_factors_reshape(x0)[0]
        if first.ndim == 4:  # video latents [C, T, H, W]: the first frame
            first = first[:, 0]
        return Image.fromarray(project_to_rgb(first, self.latent_rgb_factors,
                                              self.latent_rgb_factors_bias).numpy())


class TAESDPreviewerImpl(LatentPreviewer):
    def __init__(self, taesd: TAESD):
        self.taesd = taesd

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Image.Image:
        with torch.no_grad():
            decoded = self.taesd.decode(x0[:1].float())[0].movedim(0, 2)
        return preview_to_image(decoded)


def _method() -> LatentPreviewMethod:
    method = args.preview_method
    return method if isinstance(method, LatentPreviewMethod) else LatentPreviewMethod.NoPreviews


def _taesd_for(latent_format: Any) -> Optional[TAESD]:
    name = getattr(latent_format, "taesd_decoder_name", None)
    services = _runtime.state.services
    if not name or services is None:
        return None
    for file_name in services.paths.list_files("vae_approx"):
        if file_name.rsplit(".", 1)[0] == name:
            return TAESD(None, services.paths.full_path("vae_approx", file_name),
                         latent_channels=getattr(latent_format, "latent_channels", 4))
    return None


def get_previewer(device: Any, latent_format: Any) -> Optional[LatentPreviewer]:
    """The previewer the server's preview method asks for (None when previews are off)."""
    method = _method()
    if method == LatentPreviewMethod.NoPreviews:
        return None
    if method in (LatentPreviewMethod.TAESD, LatentPreviewMethod.Auto):
        taesd = _taesd_for(latent_format)
        if taesd is not None:
            return TAESDPreviewerImpl(taesd.to(device))
    factors = getattr(latent_format, "latent_rgb_factors", None)
    if factors is None:
        return None
    return Latent2RGBPreviewer(factors, getattr(latent_format, "latent_rgb_factors_bias", None),
                               getattr(latent_format, "latent_rgb_factors_reshape", None))


def prepare_callback(model: Any, steps: int, x0_output_dict: Optional[dict] = None) -> Any:
    """`callback(step, x0, x, total_steps)` for a sampling loop: keeps the latest x0 in `x0_output_dict["x0"]`
    and reports progress (with a preview when previews are on) for the running node."""
    import comfy.utils  # noqa: PLC0415 - the compat module, importable once installed

    previewer = get_previewer(getattr(model, "load_device", "cpu"), model.model.latent_format)
    bar = comfy.utils.ProgressBar(steps)

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer and x0 is not None else None
        bar.update_absolute(step + 1, total_steps, preview)
    return callback
