"""Random-weight Flux.1 files in the exact on-disk layouts of the released ones.

The transformer in BFL's original layout (`double_blocks.*`, `single_blocks.*`; dev with `guidance_in`, schnell
without), bare as in `flux1-dev.safetensors` or under `model.diffusion_model.` in a single-file checkpoint
(`flux1-dev-fp8.safetensors`), which also holds the 16-channel VAE under `vae.` and CLIP-L and T5-XXL under
`text_encoders.clip_l.transformer.` / `text_encoders.t5xxl.transformer.`. The encoders are those of
synthetic_sd3 (same seeds, so the standalone clip_l / t5xxl files fit both families).

Tiny sizes keep every structural feature (both block kinds, 3-axis RoPE over 64-channel heads, the guidance
embedding); `full=True` gives Flux.1's width (3072) and block counts, `depth`/`depth_single` reduce them.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch

from diffusion.flux.config import FluxConfig
from diffusion.synthetic_sd3 import SD3_CLIP_SIZES, T5_SIZES, sd3_clip_state, t5_state, vae16_config

ALL_TEXT = ("clip_l", "t5xxl")


def flux_config(full: bool, dev: bool = True, depth: Optional[int] = None, depth_single: Optional[int] = None,
                extra_channels: int = 0) -> FluxConfig:
    """`extra_channels`: 80 for a Fill model (masked image latent + 8x8 mask), 16 for Canny / Depth."""
    in_channels = (16 + extra_channels) * 4
    if full:
        return FluxConfig(in_channels=in_channels, guidance_embed=dev, depth=depth or 19, depth_single=depth_single or 38)
    return FluxConfig(in_channels=in_channels, hidden_size=128, num_heads=2, depth=depth or 2,
                      depth_single=depth_single or 2, mlp_hidden=512, context_in=T5_SIZES["tiny"][0],
                      vec_in=SD3_CLIP_SIZES["clip_l"]["tiny"][0], guidance_embed=dev, axes_dim=(8, 28, 28))


def flux_state(config: FluxConfig, seed: int, dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """A randomly initialised Flux transformer in the original layout (RMSNorm scales random too), in `dtype`."""
    from diffusion.flux.model import Flux
    torch.manual_seed(seed)
    model = Flux(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    model.to(dtype)
    return {k: v.detach() for k, v in model.state_dict().items()}


def make_flux_checkpoint(full: bool = False, seed: int = 0, dev: bool = True, text: Sequence[str] = ALL_TEXT,
                         dtype: torch.dtype = torch.float32, extra_channels: int = 0, depth: Optional[int] = None,
                         depth_single: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """A single-file Flux checkpoint: transformer, VAE (`vae.`), the encoders named in `text`."""
    from diffusion.vae.model import AutoencoderKL
    config = flux_config(full, dev, depth, depth_single, extra_channels=extra_channels)
    state = {"model.diffusion_model." + k: v for k, v in flux_state(config, seed, dtype).items()}
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(vae16_config(full))
    state.update({"vae." + k: v.detach().to(dtype) for k, v in vae.state_dict().items()})
    del vae
    if "clip_l" in text:
        state.update({"text_encoders.clip_l.transformer." + k: v.to(dtype)
                      for k, v in sd3_clip_state("clip_l", full, seed + 2).items()})
    if "t5xxl" in text:
        state.update({"text_encoders.t5xxl.transformer." + k: v for k, v in t5_state(full, seed + 4, dtype).items()})
    return {k: v.contiguous() for k, v in state.items()}
