"""detect_unet_config: everything from key names and shapes, any width; clear errors for non-UNet dicts."""
import pytest
import torch

from diffusion.unet import (UNET_PREFIX, UNetConfig, UNetModel, detect_unet_config, sd15_config, sd21_config,
                            sdxl_base_config, sdxl_refiner_config, tiny_sd1_config, tiny_sd2_config,
                            tiny_sdxl_config, tiny_sdxl_refiner_config)

FULL = [sd15_config, sd21_config, sdxl_base_config, sdxl_refiner_config]
TINY = [tiny_sd1_config, tiny_sd2_config, tiny_sdxl_config, tiny_sdxl_refiner_config]


def meta_state_dict(cfg: UNetConfig, prefix: str = ""):
    with torch.device("meta"):
        model = UNetModel(cfg)
    return {prefix + k: v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", FULL + TINY, ids=lambda f: f.__name__)
def test_recovers_config(make):
    cfg = make()
    assert detect_unet_config(meta_state_dict(cfg)) == cfg


@pytest.mark.parametrize("make", TINY, ids=lambda f: f.__name__)
def test_recovers_from_real_weights_of_a_full_checkpoint(make):
    cfg = make()
    torch.manual_seed(0)
    ckpt = {UNET_PREFIX + k: v for k, v in UNetModel(cfg).state_dict().items()}
    ckpt["first_stage_model.decoder.conv_in.weight"] = torch.zeros(8, 4, 3, 3)  # other parts are ignored
    ckpt["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.zeros(8)
    assert detect_unet_config(ckpt) == cfg


def test_family_facts():
    sd1 = detect_unet_config(meta_state_dict(sd15_config()))
    assert (sd1.num_heads, sd1.num_head_channels, sd1.use_linear_in_transformer) == (8, -1, False)
    assert sd1.context_dim == 768 and sd1.adm_in_channels is None and sd1.attention_levels == (0, 1, 2)
    sd2 = detect_unet_config(meta_state_dict(sd21_config()))
    assert (sd2.num_heads, sd2.num_head_channels, sd2.use_linear_in_transformer) == (-1, 64, True)
    assert sd2.context_dim == 1024
    xl = detect_unet_config(meta_state_dict(sdxl_base_config()))
    assert xl.adm_in_channels == 2816 and xl.context_dim == 2048 and xl.channel_mult == (1, 2, 4)
    assert xl.transformer_depth == (0, 0, 2, 2, 10, 10) and xl.transformer_depth_middle == 10
    assert xl.heads_for(1280) == (20, 64)
    ref = detect_unet_config(meta_state_dict(sdxl_refiner_config()))
    assert ref.model_channels == 384 and ref.adm_in_channels == 2560 and ref.attention_levels == (1, 2)


@pytest.mark.parametrize("make", [sd15_config, tiny_sd1_config, sdxl_base_config], ids=lambda f: f.__name__)
def test_inpainting_nine_channels(make):
    cfg = detect_unet_config(meta_state_dict(make(in_channels=9), prefix=UNET_PREFIX))
    assert cfg.in_channels == 9 and cfg.out_channels == 4
    assert cfg == make(in_channels=9)


def test_any_width_and_uneven_depths():
    # A width no family table has, 3 ResBlocks then 1, depths varying inside a level, lone-ResBlock middle.
    cfg = UNetConfig(model_channels=96, channel_mult=(1, 3), num_res_blocks=(3, 1), transformer_depth=(1, 2, 0, 3),
                     transformer_depth_output=(3, 0, 1, 2, 0, 1), transformer_depth_middle=None, context_dim=72,
                     num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=100)
    sd = meta_state_dict(cfg)
    assert "middle_block.1.proj_in.weight" not in sd
    assert detect_unet_config(sd) == cfg
    assert cfg.heads_for(96) == (1, 96) and cfg.heads_for(288) == (4, 72)


def _drop(sd, key):
    sd = dict(sd)
    del sd[key]
    return sd


@pytest.mark.parametrize("mutate, message", [
    (lambda sd: {}, "empty"),
    (lambda sd: {"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3)}, "'input_blocks.0.0.weight'"),
    (lambda sd: _drop(sd, "out.2.weight"), "'out.2.weight'"),
    (lambda sd: _drop(sd, "time_embed.0.weight"), "'time_embed.0.weight'"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("input_blocks.2.")}, "input_blocks.2"),
    (lambda sd: _drop(sd, "input_blocks.1.0.out_layers.3.weight"), "'input_blocks.1.0.out_layers.3.weight'"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("output_blocks.8.")}, "output_blocks"),
    (lambda sd: {k: v for k, v in sd.items() if not k.startswith("middle_block.")},
     "'middle_block.0.in_layers.0.weight'"),
    (lambda sd: {**sd, "input_blocks.0.0.weight": torch.zeros(32, 4)}, "input_blocks.0.0.weight"),
    (lambda sd: {**sd, "input_blocks.x.0.weight": torch.zeros(1)}, "input_blocks.x.0.weight"),
], ids=["empty", "vae", "no-out", "no-time-embed", "gap", "resblock-key", "output-count", "no-middle", "shape",
        "odd-index"])
def test_errors_name_the_key(mutate, message):
    sd = meta_state_dict(tiny_sd1_config())
    with pytest.raises(ValueError) as err:
        detect_unet_config(mutate(sd))
    assert message in str(err.value)
