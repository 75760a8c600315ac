"""Random-weight upscale models in the real on-disk key layouts, and files written from them.

The networks are spandrel's own architecture classes with small (or, for the benchmark, full) parameters:
- Real-ESRGAN RRDBNet in the layout of RealESRGAN_x4plus.pth (BasicSR's names: conv_first, body.N.rdbK.convJ,
  conv_body, conv_up1/2, conv_hr, conv_last; the .pth wraps them in {"params_ema": ...});
- Compact (SRVGGNetCompact, realesr-general-x4v3's layout: body.N with PReLU weights);
- SPAN (its conv_1/block_N/upsampler layout).
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict

import torch
from safetensors.torch import save_file

StateDict = Dict[str, torch.Tensor]


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def realesrgan_state_dict(num_feat: int = 8, num_block: int = 1, scale: int = 4, seed: int = 0) -> StateDict:
    """An RRDBNet (grow channels 32, as in every released model) under BasicSR's key names. The last conv's bias is
    0.5, so the random network's outputs sit mid-range instead of mostly clamped to 0 (a comparison then sees
    them)."""
    from spandrel.architectures.ESRGAN import ESRGAN
    net = _seeded(seed, lambda: ESRGAN(num_filters=num_feat, num_blocks=num_block, scale=scale))
    old = net.state_dict()
    ups = int(math.log2(scale))
    renamed = {}
    for key, value in old.items():
        head, kind = key.rsplit(".", 1)
        match = re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0", head)
        if match:
            name = "body.{}.rdb{}.conv{}".format(*match.groups())
        elif head == "model.0":
            name = "conv_first"
        elif head == f"model.1.sub.{num_block}":
            name = "conv_body"
        elif head in {f"model.{3 * (i + 1)}" for i in range(ups)}:
            name = f"conv_up{int(head.split('.')[1]) // 3}"
        elif head == f"model.{3 * ups + 2}":
            name = "conv_hr"
        elif head == f"model.{3 * ups + 4}":
            name = "conv_last"
        else:
            raise AssertionError(f"unexpected ESRGAN key {key}")
        renamed[f"{name}.{kind}"] = value.clone()
    renamed["conv_last.bias"].fill_(0.5)
    return renamed


def compact_state_dict(num_feat: int = 8, num_conv: int = 2, scale: int = 2, seed: int = 1) -> StateDict:
    from spandrel.architectures.Compact import Compact
    net = _seeded(seed, lambda: Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv,
                                        upscale=scale))
    return {k: v.clone() for k, v in net.state_dict().items()}


def span_state_dict(feature_channels: int = 8, scale: int = 2, seed: int = 2) -> StateDict:
    from spandrel.architectures.SPAN import SPAN
    net = _seeded(seed, lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=feature_channels, upscale=scale))
    return {k: v.clone() for k, v in net.state_dict().items()}


def write_safetensors(state: StateDict, path: str) -> str:
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return path


def write_pth(state: StateDict, path: str, wrapper: str = "params_ema") -> str:
    """A .pth as training code saves it: the weights under `wrapper` (no wrapper when empty)."""
    torch.save({wrapper: state} if wrapper else state, path)
    return path


class _MakeDirectoryWhenUnpickled:
    """Unpickling this calls os.mkdir(target): the visible side effect a malicious file would have."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def write_malicious_pickle(path: str, marker_dir: str, state: StateDict) -> str:
    """A .pth that holds real weights next to an object whose unpickling runs code (creates `marker_dir`)."""
    torch.save({"params_ema": state, "payload": _MakeDirectoryWhenUnpickled(marker_dir)}, path)
    return path
