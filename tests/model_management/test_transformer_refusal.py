"""Flux files, which the loader does not run yet, are refused with their family named, not mistaken for a UNet
or for SD3 (whose diffusers layout shares block names with Flux's); a 16-channel VAE is recognised as a VAE."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint, load_unet_file
from model_management.detection import describe_other
from model_management.file_loading import ModelFileError


def test_flux_checkpoint_and_bare_file_are_named(tmp_path):
    flux = {"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "img_in.weight": torch.zeros(2, 4)}
    bare = tmp_path / "flux1-dev.safetensors"
    save_file(flux, str(bare))
    with pytest.raises(ModelFileError, match=r"flux1-dev\.safetensors: Flux diffusion model: that model family is "
                                             r"not supported yet"):
        load_unet_file(str(bare))
    packed = tmp_path / "flux1-dev-checkpoint.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in flux.items()}, str(packed))
    with pytest.raises(ModelFileError, match=r"Flux diffusion model"):
        load_checkpoint(str(packed))


def test_flux_diffusers_layout_is_not_taken_for_sd3(tmp_path):
    flux = tmp_path / "flux1-schnell-diffusers.safetensors"
    save_file({"transformer_blocks.0.attn.add_q_proj.weight": torch.zeros(2, 2),
               "pos_embed.proj.weight": torch.zeros(2, 2, 1, 1),
               "transformer_blocks.0.attn.to_q.weight": torch.zeros(2, 2),
               "single_transformer_blocks.0.attn.to_q.weight": torch.zeros(2, 2)}, str(flux))
    with pytest.raises(ModelFileError, match=r"Flux \(diffusers layout\) diffusion model"):
        load_unet_file(str(flux))


def test_sixteen_channel_vae_is_described_as_a_vae():
    state = {"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}
    assert describe_other(state).startswith("a standalone VAE")
