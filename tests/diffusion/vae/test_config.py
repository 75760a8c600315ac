"""Config detection from LDM-layout state dicts: round trips for any width, and clear errors otherwise."""
import pytest
import torch

from diffusion.vae import AutoencoderKL, VAEConfig, detect_vae_config, sd_vae_config, strip_prefix, tiny_vae_config

CONFIGS = {
    "sd": sd_vae_config(),
    "tiny8": tiny_vae_config(),
    "tiny2": tiny_vae_config(2),
    "odd_shape": VAEConfig(in_channels=4, out_channels=1, ch=64, ch_mult=(1, 3, 2), num_res_blocks=3, z_channels=8,
                           embed_dim=6),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_detect_round_trips(name):
    config = CONFIGS[name]
    sd = AutoencoderKL(config).state_dict()
    assert detect_vae_config(sd) == config
    prefixed = {"first_stage_model." + k: v for k, v in sd.items()}
    prefixed["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # rest of a checkpoint: ignored
    assert detect_vae_config(prefixed) == config


def test_standard_configs():
    sd = sd_vae_config()
    assert (sd.ch, sd.ch_mult, sd.num_res_blocks, sd.z_channels, sd.embed_dim) == (128, (1, 2, 4, 4), 2, 4, 4)
    assert sd.downscale_factor == 8
    assert tiny_vae_config().downscale_factor == 8
    assert tiny_vae_config(2).downscale_factor == 2
    with pytest.raises(ValueError, match="downscale_factor"):
        tiny_vae_config(4)


def test_norm_groups_override_and_validation():
    sd = AutoencoderKL(tiny_vae_config()).state_dict()
    assert detect_vae_config(sd, norm_groups=4).norm_groups == 4
    with pytest.raises(ValueError, match="norm_groups"):
        VAEConfig(ch=24, norm_groups=32)


def test_strip_prefix():
    assert strip_prefix({"first_stage_model.a": 1, "cond_stage_model.b": 2}) == {"a": 1}
    assert strip_prefix({"encoder.conv_in.weight": 1}) == {"encoder.conv_in.weight": 1}


def _unet_like():
    return {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
            "model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3)}


def test_not_a_vae_errors():
    with pytest.raises(ValueError, match="empty"):
        detect_vae_config({})
    with pytest.raises(ValueError, match="encoder.conv_in.weight"):
        detect_vae_config(_unet_like())
    with pytest.raises(ValueError, match="encoder.conv_in.weight"):
        AutoencoderKL.from_state_dict(_unet_like())


def test_damaged_vae_errors():
    full = AutoencoderKL(tiny_vae_config()).state_dict()

    no_decoder = {k: v for k, v in full.items() if not k.startswith("decoder.")}
    with pytest.raises(ValueError, match="decoder.conv_out.weight"):
        detect_vae_config(no_decoder)

    no_level = {k: v for k, v in full.items() if not k.startswith("encoder.down.1.")}
    with pytest.raises(ValueError, match="not contiguous"):
        detect_vae_config(no_level)

    bad_shape = dict(full)
    bad_shape["encoder.conv_in.weight"] = torch.zeros(16, 3)
    with pytest.raises(ValueError, match="encoder.conv_in.weight.*shape"):
        detect_vae_config(bad_shape)

    no_up = {k: v for k, v in full.items() if not k.startswith("decoder.up.3.")}
    with pytest.raises(ValueError, match="decoder levels"):
        detect_vae_config(no_up)
