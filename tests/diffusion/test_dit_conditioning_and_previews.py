"""Small rules of the diffusion-transformer families: the pooled vector they need (a clear error without it or at
the wrong width), FluxGuidance's value and its default, and latent previews through the 16-channel factors."""
import pytest
import torch

from diffusion.latent_preview import RGB_FACTORS, latent_to_rgb, project_to_rgb
from diffusion.sampling.guidance import DEFAULT_FLUX_GUIDANCE, prepare_conditioning
from model_management.checkpoints import load_checkpoint


def test_sd3_needs_its_pooled_vector(tiny_models):
    model = load_checkpoint(tiny_models.sd3("checkpoint"), want_clip=False, want_vae=False).model
    cond = torch.zeros(1, 154, 256)
    shape = torch.Size([1, 16, 8, 8])
    with pytest.raises(ValueError, match="needs a pooled text embedding"):
        prepare_conditioning([[cond, {}]], shape, model)
    with pytest.raises(ValueError, match="pooled text embedding is 64-wide but this model expects 192"):
        prepare_conditioning([[cond, {"pooled_output": torch.zeros(1, 64)}]], shape, model)
    entry = prepare_conditioning([[cond, {"pooled_output": torch.ones(1, 192)}]], shape, model)[0]
    assert torch.equal(entry.y, torch.ones(1, 192)) and entry.guidance is None


def test_flux_guidance_value_and_default(tiny_models):
    dev = load_checkpoint(tiny_models.flux("checkpoint"), want_clip=False, want_vae=False).model
    schnell = load_checkpoint(tiny_models.flux("schnell"), want_clip=False, want_vae=False).model
    cond, shape = torch.zeros(1, 256, 256), torch.Size([1, 16, 8, 8])
    given = [[cond, {"pooled_output": torch.zeros(1, 64), "guidance": 2.0}]]
    unset = [[cond, {"pooled_output": torch.zeros(1, 64)}]]
    assert prepare_conditioning(given, shape, dev)[0].guidance == 2.0
    assert prepare_conditioning(unset, shape, dev)[0].guidance == DEFAULT_FLUX_GUIDANCE == 3.5
    assert prepare_conditioning(given, shape, schnell)[0].guidance is None  # no guidance embedding to feed


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_previews_use_all_sixteen_channels(family):
    torch.manual_seed(0)
    latent = torch.randn(16, 4, 5)
    factors, bias = RGB_FACTORS[family]
    assert len(factors) == 16
    expected = torch.einsum("chw,cr->hwr", latent, torch.tensor(factors)) + torch.tensor(bias)
    expected = ((expected + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8)
    assert torch.equal(latent_to_rgb(latent, family), expected)
    assert not torch.equal(latent_to_rgb(latent, family), project_to_rgb(latent, *RGB_FACTORS["sd"]))


def test_flux_fill_without_a_concat_mask_takes_the_noise_mask(tmp_path):
    """A Flux Fill model given no concat_mask sees the sampler's noise mask in its 64 mask channels (pixel
    resolution, bilinear, folded 8 x 8), ones without a noise mask -- the reference's fallback to the denoise
    mask."""
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, sample
    from diffusion.synthetic_flux import make_flux_checkpoint
    path = str(tmp_path / "flux1-fill-dev.safetensors")
    save_file(make_flux_checkpoint(text=(), extra_channels=80), path)
    model = load_checkpoint(path, want_clip=False, want_vae=False).model
    seen = []
    model.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0][:, 32:].clone()))
    latent = torch.zeros(1, 16, 8, 8)
    positive = [[torch.zeros(1, 4, 256), {"pooled_output": torch.zeros(1, 64)}]]
    sigmas = calculate_sigmas(model, "simple", 2, 1.0, "euler")
    noise_mask = torch.zeros(1, 1, 8, 8)
    noise_mask[..., 2:6, 3:7] = 1.0
    for mask in (noise_mask, None):
        seen.clear()
        sample(model, torch.randn(1, 16, 8, 8), positive, None, 1.0, SamplerChoice("euler"), sigmas, latent, 0,
               mask)
        expected = torch.ones(1, 1, 64, 64) if mask is None else \
            F.interpolate(noise_mask, size=(64, 64), mode="bilinear", align_corners=False)
        assert seen and torch.allclose(seen[0], F.pixel_unshuffle(expected, 8))
