"""Fast previews while sampling: a per-family linear projection from the latent channels to RGB.

The factors are the published least-squares fits of decoded colour against latent channels for the SD1/SD2 and
SDXL VAEs (4 channels) and the SD3 and Flux VAEs (16); a matrix multiply per step costs microseconds, against a VAE
decode's seconds.
"""
from __future__ import annotations

from typing import Optional

import torch

RGB_FACTORS = {
    "sd": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
    "sd3": ([[-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458],
             [0.0856, 0.0339, 0.0902], [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309],
             [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358], [-0.0194, 0.0020, 0.0669],
             [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
             [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293],
             [-0.1448, -0.1463, -0.1189]], [0.2394, 0.2135, 0.1925]),
    "flux": ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
              [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
              [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
              [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
              [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
              [-0.1262, -0.0982, -0.0778]], [-0.0329, -0.0718, -0.0851]),
}


def factors_key(family: str) -> str:
    """Which fit a model family's latents take."""
    if family in ("sd3", "flux"):
        return family
    return "sdxl" if family.startswith("sdxl") else "sd"


def project_to_rgb(latent: torch.Tensor, factors: list, bias: Optional[list] = None) -> torch.Tensor:
    """[C, H, W] latent -> [H, W, 3] uint8 through a linear fit `factors` [C][3] (+ `bias` [3])."""
    weight = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent[:weight.shape[0]].float().cpu(), weight)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float32)
    return ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8)


def latent_to_rgb(latent: torch.Tensor, family: str) -> torch.Tensor:
    """[C, H, W] scaled latent (as the sampler sees it) -> [H, W, 3] uint8."""
    factors, bias = RGB_FACTORS[factors_key(family)]
    return project_to_rgb(latent, factors, bias)


def preview_image(latent: torch.Tensor, family: str, max_size: Optional[int] = 512):
    """A PIL image of the first latent of a batch, upscaled 8x (nearest) for display."""
    from PIL import Image
    rgb = latent_to_rgb(latent[0], family).numpy()
    image = Image.fromarray(rgb)
    width, height = image.size
    scale = 8 if max_size is None else max(1, min(8, max_size // max(width, height)))
    return image.resize((width * scale, height * scale), Image.NEAREST)
