"""`comfy.ldm.modules.diffusionmodules.openaimodel`: our UNet and its blocks under ComfyUI's names."""
from diffusion.unet.model import UNetBlock as TimestepEmbedSequential  # noqa: F401
from diffusion.unet.model import UNetModel  # noqa: F401
from diffusion.unet.resblock import Downsample, ResBlock, Upsample  # noqa: F401


class TimestepBlock:
    """Marker base of blocks that take the time embedding (our ResBlock)."""


def forward_timestep_embed(ts, x, emb, context=None, transformer_options=None, output_shape=None, *args, **kwargs):
    """Run one UNet block (a TimestepEmbedSequential) as the UNet does."""
    return ts(x, emb, context, output_shape, transformer_options)


class VideoResBlock(ResBlock):
    """SVD's ResBlock with a temporal mixer: Tessera has no video models, so constructing one is refused."""

    def __init__(self, *args, **kwargs):
        raise ValueError("VideoResBlock (Stable Video Diffusion) is not supported: Tessera has no video models")
