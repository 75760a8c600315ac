"""UNet hyper-parameters, the standard SD1/SD2/SDXL configs, and detection of a config from a state dict.

Detection reads only key names and tensor shapes, so a fine-tune of any width or depth loads without a per-family
size table: the checkpoint itself says how wide each level is, how many ResBlocks it has and how deep each
transformer is. The one thing weights do not store is the head count, which follows the published rule of each
family (see `detect_unet_config`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

UNET_PREFIX = "model.diffusion_model."

# SDXL's `y`: pooled text embedding followed by each micro-conditioning id embedded to this many dims.
SDXL_TIME_ID_DIM = 256


def _tuple(value: Any, length: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int):
        if length is None:
            raise ValueError("an int needs a known length to expand")
        return (value,) * length
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of an LDM UNet.

    Transformer depths are stored per block (not per level) because some distilled fine-tunes vary them inside a
    level: `transformer_depth` has one entry per input ResBlock (level-major, downsamplers excluded) and
    `transformer_depth_output` one per output block, in the order the output blocks run (deepest level first).
    Depth 0 means "no SpatialTransformer in this block". `transformer_depth_middle` None means the middle block is a
    single ResBlock. Use `UNetConfig.from_levels` to write a config with one depth per level.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: tuple[int, ...] = (2, 2, 2, 2)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_output: tuple[int, ...] = (0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    transformer_depth_middle: int | None = 1
    context_dim: int | None = 768
    num_heads: int = 8
    num_head_channels: int = -1
    use_linear_in_transformer: bool = False
    adm_in_channels: int | None = None

    def __post_init__(self):
        levels = len(self.channel_mult)
        object.__setattr__(self, "channel_mult", _tuple(self.channel_mult))
        object.__setattr__(self, "num_res_blocks", _tuple(self.num_res_blocks, levels))
        object.__setattr__(self, "transformer_depth", _tuple(self.transformer_depth))
        object.__setattr__(self, "transformer_depth_output", _tuple(self.transformer_depth_output))
        if levels == 0:
            raise ValueError("channel_mult must name at least one level")
        if len(self.num_res_blocks) != levels:
            raise ValueError(f"num_res_blocks has {len(self.num_res_blocks)} entries for {levels} levels")
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise ValueError(f"transformer_depth needs one entry per input ResBlock ({sum(self.num_res_blocks)}), "
                             f"got {len(self.transformer_depth)}")
        n_out = sum(n + 1 for n in self.num_res_blocks)
        if len(self.transformer_depth_output) != n_out:
            raise ValueError(f"transformer_depth_output needs one entry per output block ({n_out}), "
                             f"got {len(self.transformer_depth_output)}")
        if (self.num_heads > 0) == (self.num_head_channels > 0):
            raise ValueError("set exactly one of num_heads and num_head_channels (the other to -1)")
        uses_attention = any(self.transformer_depth) or any(self.transformer_depth_output) or bool(
            self.transformer_depth_middle)
        if uses_attention and not self.context_dim:
            raise ValueError("a UNet with transformer blocks needs context_dim")
        for ch in self.level_channels:
            if ch % 32:
                raise ValueError(f"level width {ch} is not a multiple of 32 (GroupNorm uses 32 groups)")

    # ---- derived shape facts -------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channel_mult)

    @property
    def time_embed_dim(self) -> int:
        return self.model_channels * 4

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def num_input_blocks(self) -> int:
        """Input blocks, counting the stem conv and the downsamplers: one skip tensor each."""
        return 1 + sum(self.num_res_blocks) + self.num_levels - 1

    @property
    def attention_levels(self) -> tuple[int, ...]:
        """Levels whose input blocks carry a SpatialTransformer."""
        out, i = [], 0
        for level, n in enumerate(self.num_res_blocks):
            if any(self.transformer_depth[i:i + n]):
                out.append(level)
            i += n
        return tuple(out)

    def heads_for(self, channels: int) -> tuple[int, int]:
        """(heads, head_dim) of a transformer `channels` wide; heads * head_dim == channels."""
        if self.num_head_channels > 0:
            heads = max(1, channels // self.num_head_channels)
        else:
            heads = self.num_heads
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        return heads, channels // heads

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_levels(cls, *, channel_mult: Sequence[int], num_res_blocks: int | Sequence[int],
                    transformer_depth: int | Sequence[int], transformer_depth_middle: int | None,
                    **kwargs) -> "UNetConfig":
        """Build a config from one transformer depth per level (the same depth on the way down and up)."""
        levels = len(channel_mult)
        nrb = _tuple(num_res_blocks, levels)
        per_level = _tuple(transformer_depth, levels)
        depth_in = tuple(d for d, n in zip(per_level, nrb) for _ in range(n))
        depth_out = tuple(per_level[lv] for lv in reversed(range(levels)) for _ in range(nrb[lv] + 1))
        return cls(channel_mult=tuple(channel_mult), num_res_blocks=nrb, transformer_depth=depth_in,
                   transformer_depth_output=depth_out, transformer_depth_middle=transformer_depth_middle, **kwargs)


# ---- standard configs -----------------------------------------------------------------------------------------
def sd15_config(**overrides) -> UNetConfig:
    """SD1.x (also 1.5 inpainting with in_channels=9): conv proj_in, 8 heads, CLIP-L context."""
    cfg = UNetConfig.from_levels(model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                                 transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=768,
                                 num_heads=8, num_head_channels=-1, use_linear_in_transformer=False)
    return cfg.replace(**overrides)


def sd21_config(**overrides) -> UNetConfig:
    """SD2.x (512 eps and 768-v share it): linear proj_in, 64-dim heads, OpenCLIP-H context."""
    cfg = UNetConfig.from_levels(model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                                 transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=1024,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True)
    return cfg.replace(**overrides)


def sdxl_base_config(**overrides) -> UNetConfig:
    """SDXL base: three levels, depths 0/2/10, context CLIP-L + bigG (2048), y = 1280 pooled + 6 x 256 ids."""
    cfg = UNetConfig.from_levels(model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=2,
                                 transformer_depth=(0, 2, 10), transformer_depth_middle=10, context_dim=2048,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                                 adm_in_channels=1280 + 6 * SDXL_TIME_ID_DIM)
    return cfg.replace(**overrides)


def sdxl_refiner_config(**overrides) -> UNetConfig:
    """SDXL refiner: 384 wide, depths 0/4/4/0 (+4 middle), bigG context, y = 1280 pooled + 5 x 256 ids."""
    cfg = UNetConfig.from_levels(model_channels=384, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                                 transformer_depth=(0, 4, 4, 0), transformer_depth_middle=4, context_dim=1280,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                                 adm_in_channels=1280 + 5 * SDXL_TIME_ID_DIM)
    return cfg.replace(**overrides)


# ---- tiny configs for tests (same structure, a few thousand times smaller) ----------------------------------
TINY_SDXL_POOLED_DIM = 32


def tiny_sd1_config(**overrides) -> UNetConfig:
    """SD1 layout: conv proj_in, 8 heads, attention on all but the last level, 2 ResBlocks per level."""
    cfg = UNetConfig.from_levels(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                                 transformer_depth=(1, 1, 0), transformer_depth_middle=1, context_dim=40,
                                 num_heads=8, num_head_channels=-1, use_linear_in_transformer=False)
    return cfg.replace(**overrides)


def tiny_sd2_config(**overrides) -> UNetConfig:
    """SD2 layout: linear proj_in, 64-channel heads (so widths stay multiples of 64)."""
    cfg = UNetConfig.from_levels(model_channels=64, channel_mult=(1, 2), num_res_blocks=1,
                                 transformer_depth=(1, 0), transformer_depth_middle=1, context_dim=48,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True)
    return cfg.replace(**overrides)


def tiny_sdxl_config(**overrides) -> UNetConfig:
    """SDXL base layout: depth-0 first level, deeper later, label_emb fed pooled + 6 embedded time ids."""
    cfg = UNetConfig.from_levels(model_channels=64, channel_mult=(1, 2), num_res_blocks=2,
                                 transformer_depth=(0, 2), transformer_depth_middle=2, context_dim=96,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                                 adm_in_channels=TINY_SDXL_POOLED_DIM + 6 * SDXL_TIME_ID_DIM)
    return cfg.replace(**overrides)


def tiny_sdxl_refiner_config(**overrides) -> UNetConfig:
    """SDXL refiner layout: attention only on the inner level(s), 5 embedded time ids."""
    cfg = UNetConfig.from_levels(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1,
                                 transformer_depth=(0, 1, 0), transformer_depth_middle=1, context_dim=80,
                                 num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                                 adm_in_channels=TINY_SDXL_POOLED_DIM + 5 * SDXL_TIME_ID_DIM)
    return cfg.replace(**overrides)


# ---- detection ------------------------------------------------------------------------------------------------
def strip_unet_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """The UNet part of a checkpoint with `model.diffusion_model.` removed; a bare UNet dict passes unchanged."""
    if any(k.startswith(UNET_PREFIX) for k in state_dict):
        n = len(UNET_PREFIX)
        return {k[n:]: v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)}
    return state_dict


class _Shapes:
    """Key lookup over a state dict that raises a ValueError naming the key (tensors are only asked for .shape)."""

    def __init__(self, sd: Mapping[str, Any]):
        self.sd = sd
        self.keys = list(sd.keys())

    def has(self, key: str) -> bool:
        return key in self.sd

    def shape(self, key: str, ndim: Iterable[int] | None = None) -> tuple[int, ...]:
        if key not in self.sd:
            raise ValueError(f"not an LDM UNet state dict: missing key {key!r}")
        shape = tuple(self.sd[key].shape)
        if ndim is not None and len(shape) not in tuple(ndim):
            raise ValueError(f"unexpected shape {list(shape)} for UNet key {key!r}")
        return shape

    def indices(self, prefix: str) -> list[int]:
        """Sorted integer children of `prefix` (e.g. 'input_blocks.'), which must run 0..n-1 without gaps."""
        found = set()
        for k in self.keys:
            if k.startswith(prefix):
                head = k[len(prefix):].split(".", 1)[0]
                if not head.isdigit():
                    raise ValueError(f"odd UNet key {k!r}: expected an index after {prefix!r}")
                found.add(int(head))
        out = sorted(found)
        if out != list(range(len(out))):
            missing = sorted(set(range(max(out) + 1)) - found)
            raise ValueError(f"UNet state dict has a gap under {prefix!r}: no {prefix}{missing[0]}.*")
        return out

    def depth(self, block: str) -> int:
        """Number of transformer blocks in the SpatialTransformer at `block` (0 when there is none)."""
        if not self.has(f"{block}.proj_in.weight"):
            return 0
        n = len(self.indices(f"{block}.transformer_blocks."))
        if n == 0:
            raise ValueError(f"{block} has proj_in but no transformer_blocks")
        return n

    def first(self, suffix: str) -> str | None:
        for k in self.keys:
            if k.endswith(suffix):
                return k
        return None



def input_levels(s: "_Shapes", model_channels: int) -> tuple:
    """The input side, walked block by block (a downsampler closes a level): per level the (width multiplier,
    transformer depth) of each ResBlock, and the level's channel multiplier. Shared by the UNet and ControlNet
    detection (a ControlNet's encoder is a copy of the UNet's)."""
    levels: list[list[tuple[int, int]]] = [[]]
    for i in s.indices("input_blocks.")[1:]:
        blk = f"input_blocks.{i}"
        if s.has(f"{blk}.0.op.weight"):
            if not levels[-1]:
                raise ValueError(f"{blk}.0.op is a downsampler with no ResBlock before it in its level")
            levels.append([])
        elif s.has(f"{blk}.0.in_layers.0.weight"):
            width = s.shape(f"{blk}.0.out_layers.3.weight", ndim=(4,))[0]
            if width % model_channels:
                raise ValueError(f"{blk}.0 is {width} wide, not a multiple of model_channels={model_channels}")
            levels[-1].append((width // model_channels, s.depth(f"{blk}.1")))
        else:
            raise ValueError(f"{blk} is neither a ResBlock nor a downsampler "
                             f"(no '{blk}.0.in_layers.0.weight' or '{blk}.0.op.weight')")
    if not levels[-1]:
        raise ValueError("the last input block is a downsampler; expected ResBlocks after it")
    channel_mult = []
    for n, level in enumerate(levels):
        mults = {m for m, _ in level}
        if len(mults) != 1:
            raise ValueError(f"level {n} mixes ResBlock widths {sorted(m * model_channels for m in mults)}")
        channel_mult.append(mults.pop())
    return levels, channel_mult


def detect_unet_config(state_dict: Mapping[str, Any]) -> UNetConfig:
    """Derive a UNetConfig from an LDM-layout UNet state dict (full checkpoint or prefix-stripped).

    Widths come from conv/ResBlock weight shapes, levels from where downsamplers sit, per-level ResBlock counts
    from key indices, transformer depths by counting `transformer_blocks.K`, linear vs conv proj_in from the
    weight's ndim, context_dim from `attn2.to_k` in-features, adm from `label_emb`. Heads are not stored in weights:
    conv proj_in (SD1 family) means num_heads=8; linear proj_in (SD2/SDXL) means 64-channel heads.
    Raises ValueError naming the key that is missing or odd when the dict is not a UNet.
    """
    s = _Shapes(strip_unet_prefix(state_dict))
    if not s.keys:
        raise ValueError("not an LDM UNet state dict: it is empty (no 'model.diffusion_model.*' keys)")
    stem = s.shape("input_blocks.0.0.weight", ndim=(4,))
    model_channels, in_channels = stem[0], stem[1]
    out_channels = s.shape("out.2.weight", ndim=(4,))[0]
    ted = s.shape("time_embed.0.weight", ndim=(2,))
    if ted != (4 * model_channels, model_channels):
        raise ValueError(f"time_embed.0.weight has shape {list(ted)}, expected "
                         f"[{4 * model_channels}, {model_channels}] for a {model_channels}-channel stem")
    adm = s.shape("label_emb.0.0.weight", ndim=(2,))[1] if s.has("label_emb.0.0.weight") else None

    levels, channel_mult = input_levels(s, model_channels)
    num_res_blocks = tuple(len(level) for level in levels)
    depth_in = tuple(d for level in levels for _, d in level)

    # Middle: ResBlock, SpatialTransformer, ResBlock (or a lone ResBlock).
    s.shape("middle_block.0.in_layers.0.weight")
    middle = s.indices("middle_block.")
    if middle == [0]:
        depth_middle = None
    elif middle == [0, 1, 2]:
        depth_middle = s.depth("middle_block.1")
        if depth_middle == 0:
            raise ValueError("middle_block.1 is not a SpatialTransformer (no 'middle_block.1.proj_in.weight')")
        s.shape("middle_block.2.in_layers.0.weight")
    else:
        raise ValueError(f"odd middle block: indices {middle}, expected 0 or 0..2")

    outputs = s.indices("output_blocks.")
    expected = sum(n + 1 for n in num_res_blocks)
    if len(outputs) != expected:
        raise ValueError(f"{len(outputs)} output_blocks for an input side needing {expected}")
    depth_out = tuple(s.depth(f"output_blocks.{j}.1") for j in outputs)

    context_dim, linear = None, False
    if any(depth_in) or any(depth_out) or depth_middle:
        to_k = s.first(".attn2.to_k.weight")
        proj_in = s.first(".proj_in.weight")
        if to_k is None:
            raise ValueError("UNet has transformer blocks but no '*.attn2.to_k.weight' to read context_dim from")
        context_dim = s.shape(to_k, ndim=(2,))[1]
        linear = len(s.shape(proj_in, ndim=(2, 4))) == 2
    heads = dict(num_heads=-1, num_head_channels=64) if linear else dict(num_heads=8, num_head_channels=-1)
    return UNetConfig(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                      channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks, transformer_depth=depth_in,
                      transformer_depth_output=depth_out, transformer_depth_middle=depth_middle,
                      context_dim=context_dim, use_linear_in_transformer=linear, adm_in_channels=adm, **heads)
