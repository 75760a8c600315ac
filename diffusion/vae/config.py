"""VAE hyper-parameters and their detection from a state dict in the original LDM key layout.

Checkpoints do not carry a config, so everything is read back from key names and tensor shapes: that way a VAE of
any width or depth loads without a table of known models. The only thing weights cannot tell is the GroupNorm group
count; standard widths use 32, and narrower test models fall back to a documented rule (see `_default_groups`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

#: Prefix of the VAE inside single-file SD checkpoints; standalone VAE files have none.
CHECKPOINT_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class VAEConfig:
    """Shape of an LDM AutoencoderKL.

    `ch * ch_mult[i]` is the width of resolution level i; each level but the last halves the resolution, so the
    latent is `2 ** (len(ch_mult) - 1)` times smaller than the image. `z_channels` is the width the encoder/decoder
    see; `embed_dim` the width of the latent the rest of the system handles (equal in every published SD VAE).
    """

    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    norm_groups: int = 32
    quant_conv: bool = True  # the 1x1 convs around the latent; SD3's and Flux's 16-channel VAEs have none

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if not self.ch_mult:
            raise ValueError("VAEConfig.ch_mult must name at least one resolution level")
        for width in self.widths:
            if width % self.norm_groups:
                raise ValueError(f"VAEConfig: width {width} is not divisible by norm_groups={self.norm_groups}")

    @property
    def widths(self) -> tuple:
        """Channel width of every resolution level, highest resolution first."""
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def sd_vae_config() -> VAEConfig:
    """The VAE shared by SD1.x, SD2.x and SDXL (they differ only in weights and latent scale factor)."""
    return VAEConfig()


def tiny_vae_config(downscale_factor: int = 8) -> VAEConfig:
    """A small (~260k parameters) VAE for tests.

    The default keeps the real downscale factor 8 (latents are H/8), so code around it sees real shapes;
    `downscale_factor=2` gives an even smaller two-level model for tests that only need the structure.
    """
    if downscale_factor == 8:
        return VAEConfig(ch=16, ch_mult=(1, 1, 2, 2), num_res_blocks=1, norm_groups=_default_groups(16))
    if downscale_factor == 2:
        return VAEConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, norm_groups=_default_groups(32))
    raise ValueError(f"tiny_vae_config: downscale_factor must be 8 or 2, got {downscale_factor}")


def _default_groups(ch: int) -> int:
    """GroupNorm groups for a base width: 32 (every real SD VAE), else the largest of 8, 4, 2, 1 dividing `ch`."""
    return 32 if ch % 32 == 0 else math.gcd(ch, 8)


def strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The VAE part of a checkpoint, keys without `first_stage_model.` (a standalone VAE file passes through)."""
    if any(k.startswith(CHECKPOINT_PREFIX) for k in state_dict):
        n = len(CHECKPOINT_PREFIX)
        return {k[n:]: v for k, v in state_dict.items() if k.startswith(CHECKPOINT_PREFIX)}
    return dict(state_dict)


_DOWN_BLOCK = re.compile(r"^encoder\.down\.(\d+)\.block\.(\d+)\.")
_UP_BLOCK = re.compile(r"^decoder\.up\.(\d+)\.block\.(\d+)\.")


def _require(sd: Mapping[str, torch.Tensor], key: str, ndim: Optional[int] = None) -> torch.Tensor:
    if key not in sd:
        raise ValueError(f"not a VAE state dict: missing key {key!r}")
    t = sd[key]
    if ndim is not None and t.ndim != ndim:
        raise ValueError(f"not a VAE state dict: {key!r} has shape {tuple(t.shape)}, expected {ndim} dims")
    return t


def detect_vae_config(state_dict: Mapping[str, torch.Tensor], norm_groups: Optional[int] = None) -> VAEConfig:
    """Derive a `VAEConfig` from an LDM-layout VAE state dict (with or without the `first_stage_model.` prefix).

    Raises ValueError naming the first missing or inconsistent piece when the dict is not such a VAE. Pass
    `norm_groups` for an unusual model whose group count the default rule would get wrong.
    """
    sd = strip_prefix(state_dict)
    if not sd:
        raise ValueError("not a VAE state dict: it is empty")
    conv_in = _require(sd, "encoder.conv_in.weight", 4)
    in_channels, ch = int(conv_in.shape[1]), int(conv_in.shape[0])

    levels: dict = {}
    for key in sd:
        m = _DOWN_BLOCK.match(key)
        if m:
            levels.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not levels:
        raise ValueError("not a VAE state dict: no encoder.down.N.block.M.* keys")
    n_levels = max(levels) + 1
    if sorted(levels) != list(range(n_levels)):
        raise ValueError(f"VAE state dict: encoder levels {sorted(levels)} are not contiguous from 0")
    counts = {len(blocks) for blocks in levels.values()}
    if len(counts) != 1:
        raise ValueError(f"VAE state dict: encoder levels have differing block counts {sorted(counts)}")
    num_res_blocks = counts.pop()

    ch_mult = []
    for i in range(n_levels):
        out = int(_require(sd, f"encoder.down.{i}.block.0.conv1.weight", 4).shape[0])
        if out % ch:
            raise ValueError(f"VAE state dict: level {i} width {out} is not a multiple of the base width {ch}")
        ch_mult.append(out // ch)
        has_down = f"encoder.down.{i}.downsample.conv.weight" in sd
        if has_down != (i < n_levels - 1):
            raise ValueError(f"VAE state dict: unexpected {'presence' if has_down else 'absence'} of "
                             f"encoder.down.{i}.downsample")

    conv_out = _require(sd, "encoder.conv_out.weight", 4)
    if conv_out.shape[0] % 2:
        raise ValueError("VAE state dict: encoder.conv_out must output mean and log-variance (an even width)")
    z_channels = int(conv_out.shape[0]) // 2
    quant_conv = "quant_conv.weight" in sd or "post_quant_conv.weight" in sd
    if quant_conv:
        embed_dim = int(_require(sd, "post_quant_conv.weight", 4).shape[1])
        _require(sd, "quant_conv.weight", 4)
    else:
        embed_dim = z_channels  # the decoder reads the latent directly
    out_channels = int(_require(sd, "decoder.conv_out.weight", 4).shape[0])
    _require(sd, "decoder.conv_in.weight", 4)
    _require(sd, "encoder.mid.attn_1.q.weight")

    up_levels = {int(m.group(1)) for m in map(_UP_BLOCK.match, sd) if m}
    if up_levels != set(range(n_levels)):
        raise ValueError(f"VAE state dict: decoder levels {sorted(up_levels)} do not match encoder levels "
                         f"0..{n_levels - 1}")

    groups = norm_groups if norm_groups is not None else _default_groups(ch)
    return VAEConfig(in_channels=in_channels, out_channels=out_channels, ch=ch, ch_mult=tuple(ch_mult),
                     num_res_blocks=num_res_blocks, z_channels=z_channels, embed_dim=embed_dim, norm_groups=groups,
                     quant_conv=quant_conv)
