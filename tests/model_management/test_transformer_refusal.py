"""SD3 and Flux files, which the loader does not run yet, are refused with their family named, not mistaken for a
UNet; a 16-channel VAE is recognised as a VAE."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint, load_unet_file
from model_management.detection import describe_other
from model_management.file_loading import ModelFileError
from tests.diffusion.mmdit.helpers import diffusers_sd3, original_state


@pytest.fixture(scope="module")
def sd3_state():
    return original_state(diffusers_sd3(layers=2))


def test_sd3_checkpoint_is_named(tmp_path, sd3_state):
    path = tmp_path / "sd3.5_medium.safetensors"
    save_file({"model.diffusion_model." + k: v.contiguous() for k, v in sd3_state.items()}, str(path))
    with pytest.raises(ModelFileError, match=r"sd3\.5_medium\.safetensors: SD3\.x \(MMDiT\) diffusion model"):
        load_checkpoint(str(path))


def test_bare_sd3_and_flux_diffusion_models_are_named(tmp_path, sd3_state):
    bare = tmp_path / "sd3_bare.safetensors"
    save_file({k: v.contiguous() for k, v in sd3_state.items()}, str(bare))
    with pytest.raises(ModelFileError, match=r"SD3\.x \(MMDiT\).*not supported yet"):
        load_unet_file(str(bare))
    flux = tmp_path / "flux1-dev.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "img_in.weight": torch.zeros(2, 4)},
              str(flux))
    with pytest.raises(ModelFileError, match=r"flux1-dev\.safetensors: Flux diffusion model"):
        load_unet_file(str(flux))


def test_flux_diffusers_layout_is_not_taken_for_sd3(tmp_path):
    flux = tmp_path / "flux1-schnell-diffusers.safetensors"
    save_file({"transformer_blocks.0.attn.add_q_proj.weight": torch.zeros(2, 2),
               "single_transformer_blocks.0.attn.to_q.weight": torch.zeros(2, 2)}, str(flux))
    with pytest.raises(ModelFileError, match=r"Flux \(diffusers layout\) diffusion model"):
        load_unet_file(str(flux))


def test_sixteen_channel_vae_is_described_as_a_vae():
    state = {"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}
    assert describe_other(state).startswith("a standalone VAE")
