"""The Stable Diffusion VAE (AutoencoderKL) with module names that match the original LDM checkpoint keys.

Naming the modules after the checkpoint layout (`encoder.down.0.block.1.conv1`, `decoder.mid.attn_1.q`, ...)
means a checkpoint loads with a plain strict `load_state_dict`, with no key-renaming table to keep in sync. The
latent scale factor (0.18215 / 0.13025) is deliberately not applied here: it belongs to the model family, so the
wrapper that knows the family applies it.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention_kernel import scaled_dot_product_attention, uses_blocked_kernel
from diffusion.vae.config import VAEConfig, detect_vae_config, strip_prefix

_EPS = 1e-6
#: Upper bound on elements of one attention score matrix; longer query sequences are processed in chunks.
_ATTN_SCORE_BUDGET = 1 << 26
#: Run CPU encodes/decodes on channels-last (NHWC) activations; see `_activation_layout`.
CPU_CHANNELS_LAST = True


def _activation_layout(t: torch.Tensor) -> torch.Tensor:
    """Channels-last on CPU, where oneDNN's convolutions work in NHWC natively and an NCHW map is reordered into its
    blocked layout and back around every conv (the 512x512 decode is ~15% faster this way; the layout then carries
    through GroupNorm, SiLU, upsampling and attention untouched). Other devices keep the tensor as it is."""
    if CPU_CHANNELS_LAST and t.device.type == "cpu" and t.ndim == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _norm(config: VAEConfig, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(config.norm_groups, channels, eps=_EPS, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a residual; a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, config: VAEConfig, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = _norm(config, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = _norm(config, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return skip + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions (the VAE's only global operation).

    q/k/v/proj_out are 1x1 convolutions as in the original files; some converted files store them as linear
    [C, C] (or conv1d [C, C, 1]) weights, which the load hook reshapes, so both load.
    """

    _PROJ = ("q", "k", "v", "proj_out")

    def __init__(self, config: VAEConfig, channels: int) -> None:
        super().__init__()
        self.norm = _norm(config, channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._PROJ:
            key = f"{prefix}{name}.weight"
            w = state_dict.get(key)
            if w is not None and w.ndim in (2, 3):
                state_dict[key] = w.reshape(w.shape[0], w.shape[1], 1, 1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # Tokens [B, HW, C]: a free view of a channels-last map (see `_activation_layout`). q/k/v come from one matmul
        # with the three 1x1-conv weights stacked, so each is [B, 1, HW, C] with unit stride along C -- the layout
        # SDPA's fused CPU kernel takes directly. (Channel-major views sent it to the math fallback, which also
        # materialises the HW x HW score matrix.) Same arithmetic as the convs: a 1x1 conv is this matmul.
        y = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight]).reshape(3 * c, c)
        bias = torch.cat([self.q.bias, self.k.bias, self.v.bias])
        q, k, v = F.linear(y, weight, bias).unsqueeze(1).chunk(3, dim=-1)
        n = h * w
        chunk = max(1024, _ATTN_SCORE_BUDGET // max(n, 1))
        if n <= chunk or uses_blocked_kernel(q, k, v, None):  # the blocked kernel bounds its scores itself
            out = scaled_dot_product_attention(q, k, v)
        else:  # softmax is per query, so splitting the queries is exact and bounds the score matrix
            out = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + chunk], k, v)
                             for i in range(0, n, chunk)], dim=2)
        out = F.linear(out.squeeze(1), self.proj_out.weight.reshape(c, c), self.proj_out.bias)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after padding one pixel right and bottom only (the LDM convention: H -> floor(H/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """Resnet, attention, resnet at the lowest resolution (keys `mid.block_1`, `mid.attn_1`, `mid.block_2`)."""

    def __init__(self, config: VAEConfig, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(config, channels, channels)
        self.attn_1 = AttnBlock(config, channels)
        self.block_2 = ResnetBlock(config, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: `block.M` resnets plus an optional `downsample`/`upsample` (set by the owner)."""

    def __init__(self, blocks: list) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)


class Encoder(nn.Module):
    """Image -> (mean, log-variance) stacked along channels, 2*z_channels wide."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = config.widths
        self.conv_in = nn.Conv2d(config.in_channels, config.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = config.ch
        for i, out_w in enumerate(widths):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(ResnetBlock(config, width, out_w))
                width = out_w
            level = _Level(blocks)
            if i < len(widths) - 1:
                level.downsample = Downsample(width)
            self.down.append(level)
        self.mid = MidBlock(config, width)
        self.norm_out = _norm(config, width)
        self.conv_out = nn.Conv2d(width, 2 * config.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """z -> image. `up.N` is indexed by resolution level like the encoder, so it runs from the last N to 0."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        widths = config.widths
        width = widths[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, 3, padding=1)
        self.mid = MidBlock(config, width)
        levels = []
        for i in reversed(range(len(widths))):
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(config, width, widths[i]))
                width = widths[i]
            level = _Level(blocks)
            if i > 0:
                level.upsample = Upsample(width)
            levels.append(level)
        self.up = nn.ModuleList(reversed(levels))
        self.norm_out = _norm(config, width)
        self.conv_out = nn.Conv2d(width, config.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """The SD VAE. Pixels are [B, C, H, W] in -1..1; latents [B, embed_dim, H/f, W/f], unscaled."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        if config.quant_conv:
            self.quant_conv = nn.Conv2d(2 * config.z_channels, 2 * config.embed_dim, 1)
            self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        else:
            self.quant_conv = self.post_quant_conv = None

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], norm_groups: Optional[int] = None,
                        dtype: Optional[torch.dtype] = None) -> "AutoencoderKL":
        """Build from a checkpoint or standalone VAE state dict: detect the config, then load strictly."""
        sd = strip_prefix(state_dict)
        model = cls(detect_vae_config(sd, norm_groups=norm_groups))
        model.load_state_dict(sd, strict=True)
        if dtype is not None:
            model.to(dtype=dtype)
        return model.eval()

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.embed_dim

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        w = self.encoder.conv_in.weight
        return _activation_layout(x.to(device=w.device, dtype=w.dtype))

    def encode_moments(self, pixels: torch.Tensor) -> tuple:
        """Posterior (mean, logvar), each [B, embed_dim, H/f, W/f]; logvar clamped to [-30, 20] as in LDM."""
        moments = self.encoder(self._prepare(pixels))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean, logvar = moments.chunk(2, dim=1)
        return mean.contiguous(), logvar.clamp(-30.0, 20.0).contiguous()

    def encode(self, pixels: torch.Tensor, sample: bool = False,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Pixels in -1..1 -> latent. The posterior mean by default (deterministic, what img2img uses);
        `sample=True` draws mean + std * noise, the noise from `generator` (on the generator's device)."""
        mean, logvar = self.encode_moments(pixels)
        if not sample:
            return mean
        noise_device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=noise_device, dtype=torch.float32)
        return mean + torch.exp(0.5 * logvar) * noise.to(device=mean.device, dtype=mean.dtype)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (unscaled) -> pixels [B, out_channels, H*f, W*f] in about -1..1 (not clamped)."""
        first = self.post_quant_conv if self.post_quant_conv is not None else self.decoder.conv_in
        latent = _activation_layout(latent.to(device=first.weight.device, dtype=first.weight.dtype))
        if self.post_quant_conv is not None:
            latent = self.post_quant_conv(latent)
        return self.decoder(latent).contiguous()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(pixels))
