"""diffusers as an independent reference: a matching UNet2DConditionModel config and LDM -> diffusers weights."""
from __future__ import annotations

import torch

from diffusion.unet import UNET_PREFIX, UNetConfig


def diffusers_config(cfg: UNetConfig, sample_size: int = 16) -> dict:
    """The UNet2DConditionModel config of the same network (diffusers wants one depth per level)."""
    per_level, i = [], 0
    for n in cfg.num_res_blocks:
        depths = set(cfg.transformer_depth[i:i + n])
        assert len(depths) == 1, "diffusers needs one transformer depth per level"
        per_level.append(depths.pop())
        i += n
    attn = [d > 0 for d in per_level]
    layers = [d if d else 1 for d in per_level]  # ignored by the plain blocks; diffusers wants >= 1
    assert cfg.transformer_depth_middle == layers[-1], "diffusers' middle depth is the last level's"
    assert len(set(cfg.num_res_blocks)) == 1
    if cfg.num_head_channels > 0:
        heads = tuple(cfg.heads_for(ch)[0] for ch in cfg.level_channels)  # diffusers' "attention_head_dim" = heads
    else:
        heads = cfg.num_heads
    config = dict(
        sample_size=sample_size,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        block_out_channels=cfg.level_channels,
        layers_per_block=cfg.num_res_blocks[0],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=heads,
        use_linear_projection=cfg.use_linear_in_transformer,
        transformer_layers_per_block=tuple(layers),
        norm_num_groups=32,
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    if cfg.adm_in_channels:
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=cfg.adm_in_channels)
    return config


def to_diffusers(model: torch.nn.Module, cfg: UNetConfig, sample_size: int = 16):
    """Convert `model`'s weights with diffusers' own single-file converter; load strictly. Returns the model."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    checkpoint = {UNET_PREFIX + k: v for k, v in model.state_dict().items()}
    config = diffusers_config(cfg, sample_size)
    converted = convert_ldm_unet_checkpoint(checkpoint, config)
    assert len(converted) == len(checkpoint), "converter dropped or merged keys"
    ref = UNet2DConditionModel(**config)
    missing, unexpected = ref.load_state_dict(converted, strict=False)
    assert not missing, missing
    assert not unexpected, unexpected
    return ref.eval()
