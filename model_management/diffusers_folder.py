"""Diffusers-format model folders (`unet/`, `vae/`, `text_encoder/`, `text_encoder_2/`) as one single-file state dict.

The UNet and VAE are renamed to the original (LDM) layout our networks load -- the renaming below is the published
correspondence between the two layouts -- and the text encoders, already in transformers' layout, are placed under
the prefixes a single-file checkpoint of the same family uses. The result goes through the same detection and
loading as any checkpoint.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional, Tuple

import torch

from model_management.detection import (SD1_TEXT, SD2_TEXT, SDXL_TEXT_G, SDXL_TEXT_L, UNET_PREFIX, VAE_PREFIX,
                                        unet_family)
from model_management.file_loading import ModelFileError, load_state_dict

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.fp16.safetensors", "diffusion_pytorch_model.bin", "pytorch_model.bin")

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}


def _weights_file(folder: str) -> Optional[str]:
    for name in WEIGHT_NAMES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def unet_to_ldm(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    keys = list(state)
    per_level = _count(keys, r"down_blocks\.0\.resnets\.(\d+)\.")
    up_attn = {int(m.group(1)) for k in keys for m in [re.match(r"up_blocks\.(\d+)\.attentions\.", k)] if m}
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = diffusers_unet_key_to_ldm(key, per_level, up_attn)
        if new is None:
            raise ModelFileError(f"unet: unexpected diffusers key {key!r}")
        out[new] = value
    return out


def _resnet_tail(rest: str) -> str:
    name, _, tail = rest.partition(".")
    return f"{_RESNET.get(name, name)}.{tail}" if tail else _RESNET.get(name, name)


_UNET_SIMPLE = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
                "time_embedding.linear_2.": "time_embed.2.", "add_embedding.linear_1.": "label_emb.0.0.",
                "add_embedding.linear_2.": "label_emb.0.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}


def diffusers_unet_key_to_ldm(key: str, per_level: int, up_attention_levels) -> Optional[str]:
    """One diffusers UNet name in our (LDM) naming; None when it is not a UNet name. `per_level`: resnets per
    level; `up_attention_levels`: the diffusers up_blocks indices that have attentions."""
    up_attn = up_attention_levels
    for old, new in _UNET_SIMPLE.items():
        if key.startswith(old):
            return new + key[len(old):]
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        index = 1 + level * (per_level + 1) + j
        return f"input_blocks.{index}.0.{_resnet_tail(rest)}" if kind == "resnets" else \
            f"input_blocks.{index}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"input_blocks.{(int(m.group(1)) + 1) * (per_level + 1)}.0.op.{m.group(2)}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        return f"middle_block.{2 * j}.{_resnet_tail(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if m:
        level, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        index = level * (per_level + 1) + j
        return f"output_blocks.{index}.0.{_resnet_tail(rest)}" if kind == "resnets" else \
            f"output_blocks.{index}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        level = int(m.group(1))
        slot = 2 if level in up_attn else 1
        return f"output_blocks.{level * (per_level + 1) + per_level}.{slot}.conv.{m.group(2)}"
    return None


def unet_layout(ldm_keys) -> Tuple[int, set]:
    """(resnets per level, diffusers up_blocks indices with attentions) of a UNet from its LDM parameter names."""
    keys = list(ldm_keys)
    ops = [int(m.group(1)) for k in keys for m in [re.match(r"input_blocks\.(\d+)\.0\.op\.", k)] if m]
    per_level = min(ops) - 1 if ops else _count(keys, r"input_blocks\.(\d+)\.") - 1
    up_attn = {int(m.group(1)) // (per_level + 1) for k in keys
               for m in [re.match(r"output_blocks\.(\d+)\.1\.(?!conv\.)", k)] if m}
    return per_level, up_attn


_RESNET_BACK = {v: k for k, v in _RESNET.items()}


def _resnet_back(rest: str) -> str:
    for ldm, diffusers in _RESNET_BACK.items():
        if rest == ldm or rest.startswith(ldm + "."):
            return diffusers + rest[len(ldm):]
    return rest


def ldm_unet_key_to_diffusers(key: str, per_level: int, up_attention_levels) -> Optional[str]:
    """The inverse of `diffusers_unet_key_to_ldm` (same arguments); None for names outside the UNet layout."""
    for diffusers, ldm in _UNET_SIMPLE.items():
        if key.startswith(ldm):
            return diffusers + key[len(ldm):]
    span = per_level + 1
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if m:
        index, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if slot == 0 and rest.startswith("op."):
            return f"down_blocks.{index // span - 1}.downsamplers.0.conv.{rest[3:]}"
        level, j = divmod(index - 1, span)
        return f"down_blocks.{level}.resnets.{j}.{_resnet_back(rest)}" if slot == 0 else \
            f"down_blocks.{level}.attentions.{j}.{rest}"
    m = re.match(r"middle_block\.(\d+)\.(.*)", key)
    if m:
        index, rest = int(m.group(1)), m.group(2)
        return f"mid_block.attentions.0.{rest}" if index == 1 else \
            f"mid_block.resnets.{index // 2}.{_resnet_back(rest)}"
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)", key)
    if m:
        index, slot, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, j = divmod(index, span)
        if slot == 0:
            return f"up_blocks.{level}.resnets.{j}.{_resnet_back(rest)}"
        if rest.startswith("conv.") and (slot == 2 or level not in up_attention_levels):
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        return f"up_blocks.{level}.attentions.{j}.{rest}"
    return None

def vae_to_ldm(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    up_levels = _count(state, r"decoder\.up_blocks\.(\d+)\.")
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _vae_key(key, up_levels)
        if new is None:
            raise ModelFileError(f"vae: unexpected diffusers key {key!r}")
        if new.split(".")[-2] in ("q", "k", "v", "proj_out") and ".mid.attn_1." in new and value.ndim == 2:
            value = value[:, :, None, None]  # diffusers keeps these 1x1 convs as linear layers
        out[new] = value
    return out


def _vae_key(key: str, up_levels: int) -> Optional[str]:
    if key.startswith(("quant_conv.", "post_quant_conv.")) or re.match(r"(encoder|decoder)\.conv_(in|out)\.", key):
        return key
    m = re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key)
    if m:
        return f"{m.group(1)}.norm_out.{m.group(2)}"
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*?)\.(weight|bias)$", key)
    if m and m.group(2) in _VAE_ATTN:
        return f"{m.group(1)}.mid.attn_1.{_VAE_ATTN[m.group(2)]}.{m.group(3)}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        return f"encoder.down.{m.group(1)}.block.{m.group(2)}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"encoder.down.{m.group(1)}.downsample.conv.{m.group(2)}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)
    if m:
        level = up_levels - 1 - int(m.group(1))
        return f"decoder.up.{level}.block.{m.group(2)}.{m.group(3).replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)
    if m:
        return f"decoder.up.{up_levels - 1 - int(m.group(1))}.upsample.conv.{m.group(2)}"
    return None


def load_diffusers_folder(folder: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """A single-file-layout state dict (and empty metadata) from a diffusers pipeline folder."""
    name = os.path.basename(folder.rstrip("/"))
    unet_file = _weights_file(os.path.join(folder, "unet"))
    if unet_file is None:
        raise ModelFileError(f"{name}: not a diffusers model folder (no unet/ weights)")
    unet = unet_to_ldm(load_state_dict(unet_file))
    state: Dict[str, torch.Tensor] = {UNET_PREFIX + k: v for k, v in unet.items()}
    vae_file = _weights_file(os.path.join(folder, "vae"))
    if vae_file is not None:
        state.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(load_state_dict(vae_file)).items()})
    family = unet_family(unet)
    text_file = _weights_file(os.path.join(folder, "text_encoder"))
    text2_file = _weights_file(os.path.join(folder, "text_encoder_2"))
    if family == "sdxl":
        prefixes = [(text_file, SDXL_TEXT_L), (text2_file, SDXL_TEXT_G)]
    elif family == "sdxl_refiner":
        prefixes = [(text2_file or text_file, "conditioner.embedders.0.model.")]
    else:
        prefixes = [(text_file, SD2_TEXT if family == "sd2" else SD1_TEXT)]
    for path, prefix in prefixes:
        if path is not None:
            state.update({prefix + k: v for k, v in load_state_dict(path).items()})
    return state, {}
