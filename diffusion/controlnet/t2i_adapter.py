"""T2I-Adapters (TencentARC): small conv networks that turn a control image into one feature map per UNet level.

Unlike a ControlNet, an adapter never sees the latent, the timestep or the prompt, so its features are computed
once per hint and reused at every step. Each feature is added to the UNet encoder (the control dict's "input"
list) after the last input block that has the feature's width and resolution; a feature with no such block left
(SDXL's fourth) goes to the middle block. For SD1.x that is input blocks 2, 5, 8, 11; for SDXL 3, 5, 8 and the middle.

Formats read (all normalised to the original layout below before loading):
  - original "full" adapter: `conv_in`, `body.N.{block1,block2}` (+ `in_conv` where the width changes, optional
    `skep`, optional conv downsampler `down_opt.op`); two ResBlocks per level; the image is pixel-unshuffled by 8,
    or by 16 for the SDXL variant (conv_in reads 16*16*c channels) which downsamples once, at its third level;
  - original "light" adapter: `body.N.{in_conv, body.M.{block1,block2}, out_conv}`, no `conv_in`;
  - diffusers `T2IAdapter` (`adapter.conv_in`, `adapter.body.N.resnets.M.*`, `adapter.body.N.in_conv`), full,
    full-XL and light; and any of the above under an `adapter.` prefix or an `{"adapter": state_dict}` wrapper.
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .control import ControlModelBase

# input channels after pixel-unshuffle -> (image channels, unshuffle factor)
_UNSHUFFLE = {64: (1, 8), 192: (3, 8), 256: (1, 16), 768: (3, 16)}
FULL_RES_BLOCKS = 2  # ResBlocks per level in every published original-layout full adapter
_DIFFUSERS_RESNET = re.compile(r"^body\.(\d+)\.resnets\.(\d+)\.(.*)$")
_DIFFUSERS_BLOCK = re.compile(r"^body\.(\d+)\.(in_conv|out_conv)\.(.*)$")


# ---- format detection and conversion ---------------------------------------------------------------------------
def _unwrap(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = state_dict.get("adapter") if isinstance(state_dict, Mapping) else None
    return inner if isinstance(inner, Mapping) else state_dict


def _strip_adapter_prefix(sd: Mapping[str, Any]) -> dict:
    if any(k.startswith("adapter.") for k in sd):
        return {k[len("adapter."):]: v for k, v in sd.items() if k.startswith("adapter.")}
    return dict(sd)


def is_t2i_adapter(state_dict: Mapping[str, Any]) -> bool:
    """True for a T2I-adapter state dict in any of the layouts this module reads."""
    try:
        sd = _strip_adapter_prefix(_unwrap(state_dict))
    except AttributeError:
        return False
    if "conv_in.weight" in sd and ("body.0.block1.weight" in sd or "body.0.resnets.0.block1.weight" in sd):
        return True
    return "body.0.in_conv.weight" in sd and "body.0.out_conv.weight" in sd and (
        "body.0.body.0.block1.weight" in sd or "body.0.resnets.0.block1.weight" in sd)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd for m in [rx.match(k)] if m}
    if found and sorted(found) != list(range(len(found))):
        raise ValueError(f"T2I-adapter state dict has a gap in its {pattern!r} indices: {sorted(found)}")
    return len(found)


def _from_diffusers(sd: Mapping[str, Any], light: bool) -> dict:
    """diffusers keys (prefix stripped) -> original keys. Full: `body.i.resnets.j` -> `body.{i*n+j}` and the level's
    `body.i.in_conv` -> the first ResBlock's `in_conv`. Light: `body.i.resnets.j` -> `body.i.body.j`."""
    out = {}
    per_level = _count(sd, r"^body\.0\.resnets\.(\d+)\.")
    for key, value in sd.items():
        m = _DIFFUSERS_RESNET.match(key)
        b = _DIFFUSERS_BLOCK.match(key)
        if m:
            level, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            key = f"body.{level}.body.{j}.{rest}" if light else f"body.{level * per_level + j}.{rest}"
        elif b and not light:
            key = f"body.{int(b.group(1)) * per_level}.{b.group(2)}.{b.group(3)}"
        out[key] = value
    return out


def _normalise(state_dict: Mapping[str, Any]) -> tuple[dict, str, int]:
    """(original-layout dict, "full" | "light", ResBlocks per full level)."""
    sd = _strip_adapter_prefix(_unwrap(state_dict))
    light = "conv_in.weight" not in sd
    diffusers = any(".resnets." in k for k in sd)
    per_level = FULL_RES_BLOCKS
    if diffusers:
        if not light:
            per_level = _count(sd, r"^body\.0\.resnets\.(\d+)\.")
        sd = _from_diffusers(sd, light)
    return sd, "light" if light else "full", per_level


# ---- the networks ----------------------------------------------------------------------------------------------
def _conv(weight: torch.Tensor, stride: int = 1) -> nn.Conv2d:
    out_c, in_c, k, _ = weight.shape
    return nn.Conv2d(in_c, out_c, k, stride=stride, padding=k // 2)


class _Down(nn.Module):
    """Halves the size (rounding up, as the UNet's stride-2 conv does): a 3x3 stride-2 conv (`op`) or 2x2 average."""

    def __init__(self, conv_weight: Optional[torch.Tensor]):
        super().__init__()
        self.op = _conv(conv_weight, stride=2) if conv_weight is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op is not None:
            return self.op(x)
        return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class _FullResBlock(nn.Module):
    """[down] -> [in_conv] -> x + block2(relu(block1(x))) (+ skep(x) instead of x when a skip conv is present)."""

    def __init__(self, sd: Mapping[str, Any], prefix: str, down: bool):
        super().__init__()
        w = lambda name: sd.get(f"{prefix}{name}.weight")  # noqa: E731
        conv_down = sd.get(f"{prefix}down_opt.op.weight")
        self.down_opt = _Down(conv_down) if down or conv_down is not None else None
        self.in_conv = _conv(w("in_conv")) if w("in_conv") is not None else None
        if w("block1") is None or w("block2") is None:
            raise ValueError(f"T2I-adapter state dict lacks {prefix}block1/block2 weights")
        self.block1, self.block2 = _conv(w("block1")), _conv(w("block2"))
        self.skep = _conv(w("skep")) if w("skep") is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        h = self.block2(F.relu(self.block1(x)))
        return h + (self.skep(x) if self.skep is not None else x)


class FullAdapter(nn.Module):
    """Original full adapter (SD1 and SDXL): unshuffle, conv_in, `levels` x `per_level` ResBlocks."""

    def __init__(self, sd: Mapping[str, Any], per_level: int):
        super().__init__()
        c_in = sd["conv_in.weight"].shape[1]
        if c_in not in _UNSHUFFLE:
            raise ValueError(f"T2I-adapter conv_in reads {c_in} channels; expected 64/192 (SD1: 1 or 3 image "
                             f"channels unshuffled by 8) or 256/768 (SDXL: unshuffled by 16)")
        self.image_channels, self.unshuffle = _UNSHUFFLE[c_in]
        blocks = _count(sd, r"^body\.(\d+)\.")
        if blocks == 0 or blocks % per_level:
            raise ValueError(f"T2I-adapter has {blocks} body blocks; expected a multiple of {per_level} per level")
        levels = blocks // per_level
        # SD1: every level after the first starts by halving; SDXL (unshuffle 16) halves only at its third level.
        downs = [lv == 2 for lv in range(levels)] if self.unshuffle == 16 else [lv > 0 for lv in range(levels)]
        self.conv_in = _conv(sd["conv_in.weight"])
        self.body = nn.ModuleList(_FullResBlock(sd, f"body.{n}.", downs[n // per_level] and n % per_level == 0)
                                  for n in range(blocks))
        self.per_level = per_level
        self.levels = levels
        self.feature_downs = [sum(downs[:lv + 1]) for lv in range(levels)]
        self.feature_channels = [self.body[(lv + 1) * per_level - 1].block2.out_channels for lv in range(levels)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.conv_in(F.pixel_unshuffle(x, self.unshuffle))
        features = []
        for n, block in enumerate(self.body):
            x = block(x)
            if (n + 1) % self.per_level == 0:
                features.append(x)
        return features


class _LightResBlock(nn.Module):
    def __init__(self, sd: Mapping[str, Any], prefix: str):
        super().__init__()
        self.block1, self.block2 = _conv(sd[f"{prefix}block1.weight"]), _conv(sd[f"{prefix}block2.weight"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(F.relu(self.block1(x)))


class _Extractor(nn.Module):
    """One light-adapter level: [2x2 average down] -> 1x1 in_conv to width/4 -> ResBlocks -> 1x1 out_conv."""

    def __init__(self, sd: Mapping[str, Any], prefix: str, down: bool):
        super().__init__()
        self.down_opt = _Down(None) if down else None
        self.in_conv = _conv(sd[f"{prefix}in_conv.weight"])
        n = _count({k[len(prefix):]: None for k in sd if k.startswith(prefix)}, r"^body\.(\d+)\.")
        self.body = nn.Sequential(*[_LightResBlock(sd, f"{prefix}body.{j}.") for j in range(n)])
        self.out_conv = _conv(sd[f"{prefix}out_conv.weight"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down_opt is not None:
            x = self.down_opt(x)
        return self.out_conv(self.body(self.in_conv(x)))


class LightAdapter(nn.Module):
    """Original light adapter (SD1): unshuffle by 8, then one extractor per level, halving from the second on."""

    def __init__(self, sd: Mapping[str, Any]):
        super().__init__()
        c_in = sd["body.0.in_conv.weight"].shape[1]
        if c_in not in (64, 192):
            raise ValueError(f"light T2I-adapter reads {c_in} channels; expected 64 or 192 (unshuffle by 8)")
        self.image_channels, self.unshuffle = _UNSHUFFLE[c_in]
        levels = _count(sd, r"^body\.(\d+)\.")
        self.body = nn.ModuleList(_Extractor(sd, f"body.{i}.", i > 0) for i in range(levels))
        self.feature_downs = list(range(levels))
        self.feature_channels = [blk.out_conv.out_channels for blk in self.body]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.pixel_unshuffle(x, self.unshuffle)
        features = []
        for block in self.body:
            x = block(x)
            features.append(x)
        return features


# ---- where features go in the UNet -----------------------------------------------------------------------------
def input_block_shapes(unet_config: Any) -> list[tuple[int, int]]:
    """(channels, times halved) of each UNet input block's output, in input-block order."""
    cfg = unet_config
    shapes = [(cfg.model_channels, 0)]
    for level, width in enumerate(cfg.level_channels):
        shapes += [(width, level)] * cfg.num_res_blocks[level]
        if level != cfg.num_levels - 1:
            shapes.append((width, level + 1))
    return shapes


def feature_targets(unet_config: Any, feature_shapes: Sequence[tuple[int, int]]) -> list[Any]:
    """For each adapter feature (channels, times halved relative to the latent): the input-block index it is added
    after (the last block of that width and resolution, after the previous feature's), or "middle"."""
    blocks = input_block_shapes(unet_config)
    middle = (unet_config.level_channels[-1], unet_config.num_levels - 1)
    targets, after = [], -1
    for k, shape in enumerate(feature_shapes):
        fits = [i for i, s in enumerate(blocks) if s == shape and i > after]
        if fits:
            after = fits[-1]
            targets.append(after)
        elif shape == middle and "middle" not in targets:
            targets.append("middle")
        else:
            raise ValueError(f"T2I-adapter feature {k} ({shape[0]} channels at 1/{2 ** shape[1]} latent size) fits "
                             f"no input block of this UNet (blocks: {blocks}): the adapter is for another model "
                             f"family")
    return targets


# ---- the control model -----------------------------------------------------------------------------------------
class T2IAdapterControl(ControlModelBase):
    """ControlModel for a T2I-adapter: features cached per hint; one dict entry per UNet level."""

    def __init__(self, net: Any, kind: str, source: str = ""):
        if isinstance(net, nn.Module):
            net = net.eval().requires_grad_(False)
        self._network = net  # the adapter, or a model-manager handle to it (model_management.residency)
        self.kind = kind
        self.source = source
        self.family = "sdxl" if self.net.unshuffle == 16 else "sd1"
        self._cache: Optional[tuple] = None  # (copy of the hint, device, dtype, features)

    @property
    def net(self) -> nn.Module:
        from diffusion.handles import resolve
        return resolve(self._network)

    @property
    def name(self) -> str:
        import os
        return os.path.basename(self.source) or "the T2I-adapter"

    @property
    def latent_shift(self) -> int:
        """Halvings the unshuffle alone applies relative to the latent (which is 1/8 of the image)."""
        return int(math.log2(self.net.unshuffle // 8))

    def features(self, hint: torch.Tensor, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
        """The adapter's outputs for `hint` [B, C, H, W] in 0..1, computed once per distinct hint."""
        loader = getattr(getattr(self._network, "residency", None), "devices", None)
        if loader is not None:
            device = loader.device  # where the device loader puts the adapter
        c = self._cache  # compared by value (cheap next to a UNet step), so in-place changes are never missed
        if c is not None and c[1] == device and c[2] == dtype and c[0].shape == hint.shape and \
                c[0].device == hint.device and torch.equal(c[0], hint):
            return c[3]
        x = hint
        if x.shape[1] != self.net.image_channels:
            if self.net.image_channels != 1:
                raise ValueError(f"this T2I-adapter takes {self.net.image_channels}-channel control images, got "
                                 f"{x.shape[1]}")
            x = x.mean(dim=1, keepdim=True)  # sketch-style adapters read one grey channel
        u = self.net.unshuffle
        h, w = x.shape[-2:]
        if h % u or w % u:
            x = F.interpolate(x, size=(-(-h // u) * u, -(-w // u) * u), mode="bilinear", align_corners=False)
        if loader is not None:  # owned by the model manager: the device loader places (and accounts) it
            placed = loader.use(self.net, dtype)
        else:
            placed = contextlib.nullcontext(self.net.to(device=device, dtype=dtype))
        with placed as net, torch.no_grad():
            feats = net(x.to(device=device, dtype=dtype))
        self._cache = (hint.clone(), device, dtype, feats)
        return feats

    def compute(self, x_in: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor], hint: torch.Tensor, model: Any) -> dict:
        unet = model.unet
        cfg = unet.config
        device = torch.device(getattr(model, "device", x_in.device))
        feats = self.features(hint, device, getattr(model, "dtype", x_in.dtype))
        shapes = [(c, d + self.latent_shift) for c, d in zip(self.net.feature_channels, self.net.feature_downs)]
        targets = feature_targets(cfg, shapes)
        sizes = [tuple(x_in.shape[-2:])]
        for _ in range(cfg.num_levels - 1):
            sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
        out = {"input": [None] * cfg.num_input_blocks}
        for feat, (_, downs), target in zip(feats, shapes, targets):
            if tuple(feat.shape[-2:]) != sizes[downs]:
                feat = F.interpolate(feat, size=sizes[downs], mode="nearest")
            if feat.shape[0] != x_in.shape[0]:
                if x_in.shape[0] % feat.shape[0]:
                    raise ValueError(f"a T2I-adapter hint batch of {feat.shape[0]} does not divide the latent "
                                     f"batch of {x_in.shape[0]}")
                feat = feat.repeat(x_in.shape[0] // feat.shape[0], 1, 1, 1)
            if target == "middle":
                out["middle"] = [feat]
            else:
                out["input"][target] = feat
        return out


def build_adapter(state_dict: Mapping[str, Any], source: str = "") -> T2IAdapterControl:
    """Build the T2I-adapter control model from a state dict in any supported layout (strict weight loading)."""
    if not is_t2i_adapter(state_dict):
        raise ValueError("not a T2I-adapter state dict: expected 'conv_in.weight' + 'body.0.block1.weight' (full), "
                         "'body.0.in_conv/out_conv' (light) or their diffusers 'adapter.*' forms")
    sd, kind, per_level = _normalise(state_dict)
    net = FullAdapter(sd, per_level) if kind == "full" else LightAdapter(sd)
    tensors = {k: v for k, v in sd.items() if torch.is_tensor(v)}
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"T2I-adapter ({kind}) weights do not match its layout: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return T2IAdapterControl(net.float(), kind, source)
