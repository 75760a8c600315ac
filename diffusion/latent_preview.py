"""Fast previews while sampling: a per-family linear projection from the 4 latent channels to RGB.

The factors are the published least-squares fits of decoded colour against latent channels for the SD1/SD2 and
SDXL VAEs; a matrix multiply per step costs microseconds, against a VAE decode's seconds.
"""
from __future__ import annotations

from typing import Optional

import torch

RGB_FACTORS = {
    "sd": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
}


def project_to_rgb(latent: torch.Tensor, factors: list, bias: Optional[list] = None) -> torch.Tensor:
    """[C, H, W] latent -> [H, W, 3] uint8 through a linear fit `factors` [C][3] (+ `bias` [3])."""
    weight = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent[:weight.shape[0]].float().cpu(), weight)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float32)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)


def latent_to_rgb(latent: torch.Tensor, family: str) -> torch.Tensor:
    """[C, H, W] scaled latent (as the sampler sees it) -> [H, W, 3] uint8."""
    factors, bias = RGB_FACTORS["sdxl" if family.startswith("sdxl") else "sd"]
    return project_to_rgb(latent, factors, bias)


def preview_image(latent: torch.Tensor, family: str, max_size: Optional[int] = 512):
    """A PIL image of the first latent of a batch, upscaled 8x (nearest) for display."""
    from PIL import Image
    rgb = latent_to_rgb(latent[0], family).numpy()
    image = Image.fromarray(rgb)
    width, height = image.size
    scale = 8 if max_size is None else max(1, min(8, max_size // max(width, height)))
    return image.resize((width * scale, height * scale), Image.NEAREST)
