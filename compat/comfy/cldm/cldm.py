"""`comfy.cldm.cldm.ControlNet`: the engine's ControlNet network built from ComfyUI's constructor arguments.

Packs build ControlNet variants by subclassing this class with ComfyUI's keyword arguments (the unet_config dicts
of comfy.model_detection plus `hint_channels`, `dtype`, `device`, `operations`). The network is
diffusion/controlnet/model.py's, whose module layout (`time_embed`, `label_emb`, `input_hint_block`,
`input_blocks`, `zero_convs`, `middle_block`, `middle_block_out`) and forward
`(x, hint, timesteps, context, y=None) -> {"output", "middle"}` are ComfyUI's. Options the engine's network does
not have (3D convs, scale-shift norms, resblock up/down sampling, union control types, per-block attention
switches, temporal layers) are refused by name rather than ignored. `operations` only selects how layers are
initialised before weights are loaded (all layers here compute as torch's own), so it changes nothing.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from diffusion.controlnet.model import ControlNet as EngineControlNetNetwork
from diffusion.controlnet.model import ControlNetConfig

_UNSUPPORTED = {
    "use_scale_shift_norm": False, "resblock_updown": False, "use_new_attention_order": False,
    "union_controlnet_num_control_type": None, "num_attention_blocks": None, "disable_self_attentions": None,
    "disable_middle_self_attn": False, "n_embed": None, "use_temporal_resblock": False,
    "use_temporal_attention": False,
}


class ControlNet(EngineControlNetNetwork):
    def __init__(self, image_size: Any = 32, in_channels: int = 4, model_channels: int = 320,
                 hint_channels: int = 3, num_res_blocks: Any = 2, dropout: float = 0, channel_mult: Any = (1, 2, 4, 8),
                 conv_resample: bool = True, dims: int = 2, num_classes: Any = None, use_checkpoint: bool = False,
                 dtype: torch.dtype = torch.float32, num_heads: int = -1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_spatial_transformer: bool = False, transformer_depth: Any = 1,
                 context_dim: Optional[int] = None, legacy: bool = True, use_linear_in_transformer: bool = False,
                 adm_in_channels: Optional[int] = None, transformer_depth_middle: Optional[int] = None,
                 transformer_depth_output: Any = None, attn_precision: Any = None, device: Any = None,
                 operations: Any = None, **kwargs: Any) -> None:
        from comfy.model_detection import unet_config_from_comfy  # noqa: PLC0415
        refused = [name for name, off in _UNSUPPORTED.items() if kwargs.get(name, off) not in (off, None, False)]
        if dims != 2:
            refused.append(f"dims={dims}")
        if num_classes not in (None, "sequential"):
            refused.append(f"num_classes={num_classes!r}")
        if not conv_resample:
            refused.append("conv_resample=False")
        if refused:
            raise ValueError(f"comfy.cldm.cldm.ControlNet: this ControlNet variant needs {', '.join(refused)}, "
                             f"which Tessera's ControlNet network does not have")
        if isinstance(context_dim, (list, tuple)):
            context_dim = context_dim[0]
        nrb = [num_res_blocks] * len(channel_mult) if isinstance(num_res_blocks, int) else list(num_res_blocks)
        depth = [transformer_depth] * sum(nrb) if isinstance(transformer_depth, int) else list(transformer_depth)
        unet = unet_config_from_comfy({
            "in_channels": in_channels, "model_channels": model_channels, "num_res_blocks": nrb,
            "channel_mult": list(channel_mult), "transformer_depth": depth,
            "transformer_depth_output": transformer_depth_output, "transformer_depth_middle": transformer_depth_middle,
            "context_dim": context_dim, "num_heads": num_heads, "num_head_channels": num_head_channels,
            "use_linear_in_transformer": use_linear_in_transformer,
            "adm_in_channels": adm_in_channels if num_classes == "sequential" or adm_in_channels else None})
        with torch.device(device if device is not None else "cpu"):
            super().__init__(ControlNetConfig(unet, hint_channels=hint_channels))
        self.to(dtype=dtype)
        self.model_channels, self.dims, self.in_channels = model_channels, dims, in_channels
        self.num_res_blocks, self.channel_mult = nrb, list(channel_mult)
