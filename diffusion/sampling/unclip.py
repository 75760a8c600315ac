"""unCLIP image conditioning as SDXL reads it ("revision"): the CLIP-vision image embedding, noise-augmented, in
place of the pooled text embedding.

unCLIPConditioning attaches `unclip_conditioning` entries (the CLIP_VISION_OUTPUT, a strength, a noise
augmentation in 0..1). For SDXL base and refiner the pooled vector becomes, per image embedding e of every entry,
strength * q_sample(e, level) with level = round(999 * noise_augmentation), on the Karlo prior's noise schedule
(1000 steps of alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, betas capped at 0.999); the noise is drawn from a
generator seeded with seed - 10 (the sampler's seed), afresh for every embedding. Several embeddings are summed
and the sum augmented again at level 0 with the next draw of that generator. These are the reference's numbers
(the same image for the same seed); the data statistics of SDXL's augmentor are mean 0, std 1.
"""
from __future__ import annotations

import math
from typing import List, Optional

import numpy as np
import torch

LEVELS = 1000
MERGE_AUGMENTATION = 0.0  # the noise augmentation of the summed embeddings (SDXL's value)


def karlo_sqrt_alphas_cumprod() -> tuple:
    """(sqrt(alphas_cumprod), sqrt(1 - alphas_cumprod)) of the squared-cosine schedule, float64 then float32."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.array([min(1 - alpha_bar((i + 1) / LEVELS) / alpha_bar(i / LEVELS), 0.999) for i in range(LEVELS)])
    alphas_cumprod = np.cumprod(1.0 - betas)
    return (torch.tensor(np.sqrt(alphas_cumprod), dtype=torch.float32),
            torch.tensor(np.sqrt(1.0 - alphas_cumprod), dtype=torch.float32))


def _augment(embedding: torch.Tensor, level: int, noise: torch.Tensor) -> torch.Tensor:
    keep, add = karlo_sqrt_alphas_cumprod()
    return keep[level] * embedding + add[level] * noise


def _level(augmentation: float) -> int:
    return round((LEVELS - 1) * float(augmentation))


def unclip_pooled(unclip_conditioning: List[dict], seed: Optional[int], width: int) -> torch.Tensor:
    """The [1, width] vector SDXL takes instead of the pooled text embedding."""
    generator = torch.Generator().manual_seed(((seed if seed is not None else 0) - 10) & 0xFFFFFFFFFFFFFFFF)
    start = generator.get_state()
    parts = []
    for entry in unclip_conditioning:
        output = entry["clip_vision_output"]
        embeds = output["image_embeds"] if isinstance(output, dict) else output.image_embeds
        for embedding in embeds.float().cpu():
            embedding = embedding.reshape(1, -1)
            if embedding.shape[1] != width:
                raise ValueError(f"the CLIP vision image embedding is {embedding.shape[1]}-wide but this model "
                                 f"takes {width}: use the CLIP vision model made for it (clip_vision_g for SDXL)")
            generator.set_state(start)  # every embedding gets the same draw, as the reference re-seeds per call
            noise = torch.randn(embedding.shape, generator=generator)
            parts.append(_augment(embedding, _level(entry["noise_augmentation"]), noise)
                         * float(entry["strength"]))
    if not parts:
        raise ValueError("unclip_conditioning holds no image embedding")
    if len(parts) == 1:
        return parts[0]
    summed = torch.stack(parts).sum(0)
    return _augment(summed, _level(MERGE_AUGMENTATION), torch.randn(summed.shape, generator=generator))
