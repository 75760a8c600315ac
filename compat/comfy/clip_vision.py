"""`comfy.clip_vision` for node packs: CLIP image preprocessing and the encoder output record.

Loading CLIP vision models (`load`) is not available yet in Tessera: it raises an error saying so (the
CLIPVisionLoader node is missing too), rather than returning a model that is not one.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's published normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Output:
    """What an image encoder returns: fields by attribute and by item (`out["image_embeds"]`)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)


def clip_preprocess(image: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> [B, 3, size, size] normalised: the short side scaled to `size` (bicubic,
    antialiased) and centre-cropped, or (crop=False) the whole image stretched to size x size."""
    pixels = image[..., :3].movedim(-1, 1).float()
    height, width = pixels.shape[-2:]
    if crop:
        scale = size / min(height, width)
        target = (round(scale * height), round(scale * width))
    else:
        target = (size, size)
    pixels = F.interpolate(pixels, size=target, mode="bicubic", antialias=True)
    top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
    pixels = pixels[..., top:top + size, left:left + size].clamp(0.0, 1.0)
    pixels = (pixels * 255).round() / 255  # the 8-bit image CLIP was trained on
    mean_t = torch.tensor(mean, dtype=pixels.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=pixels.dtype).view(1, 3, 1, 1)
    return (pixels - mean_t) / std_t


def load(ckpt_path: str) -> Any:
    raise NotImplementedError(f"{ckpt_path}: CLIP vision models are not supported by Tessera yet")
