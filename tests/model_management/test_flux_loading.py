"""Flux.1 files in the released layouts: single-file checkpoints (dev and schnell, VAE under `vae.`), bare
transformers in the original and the diffusers key layout, CLIP-L + T5-XXL from separate files; other diffusion
transformers refused by name."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint, load_unet_file, load_vae_file
from model_management.file_loading import ModelFileError
from model_management.text_encoder_files import load_text_encoder_files
from tests.diffusion.flux.helpers import diffusers_flux


def test_dev_checkpoint(tiny_models):
    loaded = load_checkpoint(tiny_models.flux("checkpoint"))
    assert (loaded.family.name, loaded.family.variant, loaded.family.prediction) == ("flux", "dev", "flow")
    assert not loaded.leftovers and type(loaded.model.unet).__name__ == "Flux"
    assert loaded.model.unet.config.guidance_embed and loaded.clip.stack.roles == ["clip_l", "t5xxl"]
    assert loaded.vae.vae.config.embed_dim == 16
    fmt = loaded.model.latent_format
    assert (fmt.scale_factor, fmt.shift_factor) == (0.3611, 0.1159)
    sampling = loaded.model.model_sampling
    assert sampling.kind == "exponential" and sampling.shift == 1.15 and float(sampling.timestep(0.25)) == 0.25
    assert len(sampling.sigmas) == 10000


def test_schnell_checkpoint_samples_without_shift(tiny_models):
    loaded = load_checkpoint(tiny_models.flux("schnell"))
    assert loaded.family.variant == "schnell" and not loaded.model.unet.config.guidance_embed
    sampling = loaded.model.model_sampling
    assert sampling.kind == "snr" and sampling.shift == 1.0
    assert float(sampling.sigma(torch.tensor(0.4))) == pytest.approx(0.4)


def test_bare_files_equal_the_checkpoints(tiny_models):
    bare = load_unet_file(tiny_models.flux("diffusion_model"))
    full = load_checkpoint(tiny_models.flux("checkpoint"), want_clip=False, want_vae=False)
    assert bare.family.name == "flux" and bare.family.variant == "dev"
    for (name, a), (_, b) in zip(sorted(bare.unet.state_dict().items()), sorted(full.model.unet.state_dict().items())):
        assert torch.equal(a, b), name
    assert load_vae_file(tiny_models.flux("vae")).vae.config.z_channels == 16


def test_diffusers_layout_file_runs_as_diffusers_runs_it(tmp_path):
    from tests.diffusion.flux.helpers import image_ids, pack, unpack
    ref = diffusers_flux()
    path = tmp_path / "flux1-dev-diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = load_unet_file(str(path))
    assert model.family.name == "flux" and model.family.variant == "dev"
    torch.manual_seed(0)
    x, context, pooled = torch.randn(1, 16, 8, 8), torch.randn(1, 5, 48), torch.randn(1, 40)
    t, g = torch.tensor([0.7]), torch.tensor([3.5])
    with torch.no_grad():
        expected = ref(hidden_states=pack(x), encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                       img_ids=image_ids(8, 8), txt_ids=torch.zeros(5, 3), guidance=g).sample
        got = model.forward(x, t, context, y=pooled, guidance=g)
    torch.testing.assert_close(got, unpack(expected, 16, 8, 8), atol=1e-4, rtol=1e-4)


def test_dual_clip_loader_flux_equals_the_bundled_encoders(tiny_models):
    bundled = load_checkpoint(tiny_models.flux("checkpoint"), want_model=False, want_vae=False).clip
    dual = load_text_encoder_files([tiny_models.sd3("t5xxl"), tiny_models.sd3("clip_l")], "flux")
    assert dual.family_name == "flux" and dual.stack.roles == ["clip_l", "t5xxl"]
    expected, expected_pooled, _ = bundled.encode("a lighthouse at dusk")
    cond, pooled, _ = dual.encode("a lighthouse at dusk")
    assert torch.equal(cond, expected) and torch.equal(pooled, expected_pooled)
    with pytest.raises(ModelFileError, match="Flux takes one T5-XXL and one CLIP-L"):
        load_text_encoder_files([tiny_models.sd3("clip_l"), tiny_models.sd3("clip_g")], "flux")


@pytest.mark.parametrize("marker,family", [("distilled_guidance_layer.in_proj.weight", "Chroma"),
                                           ("double_stream_modulation_img.lin.weight", "Flux.2"),
                                           ("double_layers.0.attn.w1q.weight", "AuraFlow")])
def test_other_diffusion_transformers_are_named(tmp_path, marker, family):
    path = tmp_path / "other.safetensors"
    save_file({marker: torch.zeros(2, 2), "double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2),
               "img_in.weight": torch.zeros(2, 4)}, str(path))
    with pytest.raises(ModelFileError, match=rf"other\.safetensors: {family} diffusion model: that model family is "
                                             r"not supported"):
        load_unet_file(str(path))
