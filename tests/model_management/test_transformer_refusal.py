"""Diffusion transformers this loader does not run are refused with their family named, not mistaken for a UNet,
SD3 or Flux.1 (Chroma and Flux.2 share Flux.1's block names: tests/model_management/test_flux_loading.py); a
16-channel VAE is recognised as a VAE."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint, load_unet_file
from model_management.detection import describe_other
from model_management.file_loading import ModelFileError


@pytest.mark.parametrize("keys,family", [
    (("patch_embedding.weight", "blocks.0.cross_attn.q.weight"), "Wan \\(video\\)"),
    (("preprocess_conv.weight", "transformer.layers.0.self_attn.to_qkv.weight"), "Stable Audio"),
    (("cap_embedder.0.weight", "layers.0.attention.qkv.weight"), "Lumina 2"),
])
def test_other_families_are_named_in_both_loaders(tmp_path, keys, family):
    bare = tmp_path / "other_model.safetensors"
    save_file({k: torch.zeros(2, 2) for k in keys}, str(bare))
    with pytest.raises(ModelFileError, match=rf"other_model\.safetensors: {family} diffusion model: that model "
                                             r"family is not supported \(SD1\.x, SD2\.x, SDXL, SD3\.x and Flux\.1 are\)"):
        load_unet_file(str(bare))
    packed = tmp_path / "other_checkpoint.safetensors"
    save_file({"model.diffusion_model." + k: torch.zeros(2, 2) for k in keys}, str(packed))
    with pytest.raises(ModelFileError, match=rf"{family} diffusion model"):
        load_checkpoint(str(packed))


def test_an_unknown_file_says_what_it_looks_like(tmp_path):
    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ModelFileError, match=r"not a diffusion model \(UNet, MMDiT or Flux\); it looks like a "
                                             r"standalone VAE"):
        load_unet_file(str(path))


def test_sixteen_channel_vae_is_described_as_a_vae():
    state = {"encoder.conv_in.weight": torch.zeros(1), "decoder.conv_in.weight": torch.zeros(1)}
    assert describe_other(state).startswith("a standalone VAE")
