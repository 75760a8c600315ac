"""`comfy.model_detection`: UNet configs read from state dicts, in ComfyUI's dict form, for packs that build their
own networks from a file (ControlNet variants).

Detection is the engine's (diffusion/unet/config.py for UNets, diffusion/controlnet/model.py for ControlNets, the
diffusers key maps of model_management); this module only writes the result the way ComfyUI's configs read:
per-block `transformer_depth` (input side, level 0 first) and `transformer_depth_output` (output side, listed from
the shallowest level, consumed from the end), `transformer_depth_middle` (-1 for a middle block without attention),
lists for `num_res_blocks` / `channel_mult`.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

import torch

from diffusion.unet.config import UNetConfig


def count_blocks(state_dict_keys: Iterable[str], prefix_string: str) -> int:
    """How many consecutive indices 0, 1, ... have a key starting with `prefix_string.format(index)`."""
    keys = list(state_dict_keys)
    count = 0
    while any(k.startswith(prefix_string.format(count)) for k in keys):
        count += 1
    return count


def comfy_unet_config(cfg: UNetConfig) -> Dict[str, Any]:
    """A UNetConfig as ComfyUI's unet_config dict."""
    out: Dict[str, Any] = {
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels, "model_channels": cfg.model_channels,
        "num_res_blocks": list(cfg.num_res_blocks), "channel_mult": list(cfg.channel_mult),
        "transformer_depth": list(cfg.transformer_depth),
        "transformer_depth_output": list(reversed(cfg.transformer_depth_output)),
        "transformer_depth_middle": -1 if cfg.transformer_depth_middle is None else cfg.transformer_depth_middle,
        "context_dim": cfg.context_dim, "use_linear_in_transformer": cfg.use_linear_in_transformer,
        "adm_in_channels": cfg.adm_in_channels, "num_heads": cfg.num_heads,
        "num_head_channels": cfg.num_head_channels,
        "use_temporal_resblock": False, "use_temporal_attention": False,
    }
    if cfg.adm_in_channels:
        out["num_classes"] = "sequential"
    return out


def unet_config_from_comfy(config: Dict[str, Any]) -> UNetConfig:
    """ComfyUI's unet_config dict (old form with attention_resolutions too) as a UNetConfig."""
    c = convert_config(config)
    levels = len(c["channel_mult"])
    nrb = list(c["num_res_blocks"])
    depth = c.get("transformer_depth", 0)
    if isinstance(depth, int):
        depth = [depth] * sum(nrb)
    depth_out = c.get("transformer_depth_output")
    if depth_out is None or len(depth_out) != sum(n + 1 for n in nrb):
        depth_out = [0] * sum(n + 1 for n in nrb)  # the output side of an encoder-only network is never built
    middle = c.get("transformer_depth_middle")
    if middle is None:
        middle = depth[-1] if depth else None
    middle = None if middle is not None and middle < 0 else middle
    heads, head_channels = int(c.get("num_heads", -1)), int(c.get("num_head_channels", -1))
    if heads > 0 and head_channels > 0:
        head_channels = -1
    if heads <= 0 and head_channels <= 0:
        heads = 8
    return UNetConfig(in_channels=c["in_channels"], out_channels=c.get("out_channels", c["in_channels"]),
                      model_channels=c["model_channels"], channel_mult=tuple(c["channel_mult"]),
                      num_res_blocks=tuple(nrb) if len(nrb) == levels else (nrb[0],) * levels,
                      transformer_depth=tuple(depth), transformer_depth_output=tuple(reversed(depth_out)),
                      transformer_depth_middle=middle, context_dim=c.get("context_dim"),
                      num_heads=heads, num_head_channels=head_channels,
                      use_linear_in_transformer=bool(c.get("use_linear_in_transformer", False)),
                      adm_in_channels=c.get("adm_in_channels"))


def convert_config(unet_config: Dict[str, Any]) -> Dict[str, Any]:
    """An old-style config (an int num_res_blocks, per-level transformer_depth with attention_resolutions) in the
    per-block form; a config already in that form comes back as a copy with list num_res_blocks."""
    new = dict(unet_config)
    channel_mult = new.get("channel_mult")
    num_res_blocks = new.get("num_res_blocks")
    if isinstance(num_res_blocks, int):
        num_res_blocks = [num_res_blocks] * len(channel_mult)
    if "attention_resolutions" in new:
        resolutions = new.pop("attention_resolutions")
        depth = new.get("transformer_depth")
        if isinstance(depth, int):
            depth = [depth] * len(channel_mult)
        middle = new.get("transformer_depth_middle")
        if middle is None:
            middle = depth[-1]
        t_in, t_out, scale = [], [], 1
        for level, n in enumerate(num_res_blocks):
            d = depth[level] if scale in resolutions else 0
            t_in += [d] * n
            t_out += [d] * (n + 1)
            scale *= 2
        new["transformer_depth"], new["transformer_depth_output"] = t_in, t_out
        new["transformer_depth_middle"] = middle
    new["num_res_blocks"] = num_res_blocks
    return new


def _strip(state_dict: Dict[str, Any], prefix: str) -> Dict[str, Any]:
    n = len(prefix)
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(prefix)} if prefix else dict(state_dict)


def detect_config(state_dict: Dict[str, Any], key_prefix: str = "") -> UNetConfig:
    """The UNet (or a ControlNet's encoder) under `key_prefix`, by the engine's shape rules."""
    from diffusion.controlnet.model import detect_controlnet_config  # noqa: PLC0415
    from diffusion.unet.config import detect_unet_config  # noqa: PLC0415
    sd = _strip(state_dict, key_prefix)
    if "input_hint_block.0.weight" in sd:
        return detect_controlnet_config(sd).unet
    return detect_unet_config(sd)


def detect_unet_config(state_dict: Dict[str, Any], key_prefix: str, metadata: Optional[dict] = None) -> dict:
    return comfy_unet_config(detect_config(state_dict, key_prefix))


class ModelConfig:
    """What packs read of ComfyUI's model configs: `unet_config`, `latent_format`, inference dtypes."""

    def __init__(self, unet_config: Dict[str, Any], family: str) -> None:
        from comfy import latent_formats  # noqa: PLC0415
        self.unet_config = unet_config
        self.family = family
        self.latent_format = latent_formats.SDXL() if family.startswith("sdxl") else latent_formats.SD15()
        self.supported_inference_dtypes = [torch.float16, torch.bfloat16, torch.float32]
        self.manual_cast_dtype: Optional[torch.dtype] = None
        self.sampling_settings: dict = {}
        self.optimizations = {"fp8": False}
        self.unet_extra_config: dict = {}

    def set_inference_dtype(self, dtype: torch.dtype, manual_cast_dtype: Optional[torch.dtype]) -> None:
        self.unet_config["dtype"] = dtype
        self.manual_cast_dtype = manual_cast_dtype


def _family(cfg: UNetConfig) -> str:
    from diffusion.controlnet.base import control_family  # noqa: PLC0415
    return control_family(cfg.context_dim, cfg.adm_in_channels, cfg.use_linear_in_transformer)


def model_config_from_unet(state_dict: Dict[str, Any], unet_key_prefix: str, use_base_if_no_match: bool = False,
                           metadata: Optional[dict] = None) -> Optional[ModelConfig]:
    """The config of the UNet (or ControlNet encoder) under `unet_key_prefix`, or None when there is none."""
    try:
        cfg = detect_config(state_dict, unet_key_prefix)
    except (KeyError, ValueError):
        return None
    return ModelConfig(comfy_unet_config(cfg), _family(cfg))


def unet_config_from_diffusers_unet(state_dict: Dict[str, Any], dtype: Any = None) -> Optional[dict]:
    """ComfyUI's config of a diffusers-layout UNet or ControlNet state dict (None without `conv_in.weight`)."""
    if "conv_in.weight" not in state_dict:
        return None
    from model_management.control_files import diffusers_to_ldm, is_diffusers_controlnet  # noqa: PLC0415
    if is_diffusers_controlnet(state_dict):
        cfg = detect_config(diffusers_to_ldm(state_dict))
    else:
        from model_management.diffusers_folder import unet_to_ldm  # noqa: PLC0415
        cfg = detect_config(unet_to_ldm(state_dict))
    out = comfy_unet_config(cfg)
    if dtype is not None:
        out["dtype"] = dtype
    return out


def model_config_from_diffusers_unet(state_dict: Dict[str, Any]) -> Optional[ModelConfig]:
    config = unet_config_from_diffusers_unet(state_dict)
    return None if config is None else ModelConfig(config, _family(unet_config_from_comfy(config)))


def unet_prefix_from_state_dict(state_dict: Dict[str, Any]) -> str:
    """The prefix most keys share among ComfyUI's candidates ("model." when none has more than five)."""
    candidates = ["model.diffusion_model.", "model.model.", "net."]
    counts = {c: sum(1 for k in state_dict if k.startswith(c)) for c in candidates}
    top = max(candidates, key=lambda c: counts[c])
    return top if counts[top] > 5 else "model."
