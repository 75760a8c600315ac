"""The Flux transformer against diffusers' FluxTransformer2DModel on the same random weights (dev and schnell
shapes, reduced), through our diffusers -> original key converter and config detection from the weights."""
import pytest
import torch

from diffusion.flux.config import detect_flux_config, rope_axes
from diffusion.flux.model import Flux
from tests.diffusion.flux.helpers import diffusers_flux, image_ids, original_state, pack, unpack


def ours(ref):
    state = original_state(ref)
    model = Flux(detect_flux_config(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


def test_config_read_from_the_weights():
    cfg = detect_flux_config(original_state(diffusers_flux(layers=2, single_layers=3, guidance=False)))
    assert (cfg.depth, cfg.depth_single, cfg.hidden_size, cfg.num_heads, cfg.head_dim) == (2, 3, 128, 2, 64)
    assert (cfg.context_in, cfg.vec_in, cfg.mlp_hidden, cfg.in_channels) == (48, 40, 512, 64)
    assert not cfg.guidance_embed and cfg.axes_dim == (8, 28, 28)
    assert rope_axes(128) == (16, 56, 56)


@pytest.mark.parametrize("guidance", [True, False])
@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_matches_diffusers(guidance, size):
    ref = diffusers_flux(guidance=guidance)
    model = ours(ref)
    torch.manual_seed(1)
    h, w = size
    x = torch.randn(2, 16, h, w)
    context = torch.randn(2, 7, 48)
    pooled = torch.randn(2, 40)
    t = torch.tensor([1.0, 0.3125])
    g = torch.tensor([3.5, 1.0]) if guidance else None
    with torch.no_grad():
        expected = ref(hidden_states=pack(x), encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                       img_ids=image_ids(h, w), txt_ids=torch.zeros(7, 3), guidance=g).sample
        got = model(x, t, context, y=pooled, guidance=g)
    expected = unpack(expected, 16, h, w)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_odd_sizes_are_padded_and_guidance_is_required_by_dev():
    model = ours(diffusers_flux())
    x = torch.randn(1, 16, 7, 9)
    with torch.no_grad():
        out = model(x, torch.tensor([0.5]), torch.randn(1, 5, 48), y=torch.randn(1, 40), guidance=torch.tensor([3.5]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="guidance-distilled"):
        model(x, torch.tensor([0.5]), torch.randn(1, 5, 48), y=torch.randn(1, 40))


def test_fill_model_takes_its_extra_channels_as_diffusers_does():
    """Flux Fill: 16 latent + 16 masked-image + 64 mask channels in, 16 out."""
    ref = diffusers_flux(in_channels=384)
    model = ours(ref)
    assert (model.config.in_channels, model.config.out_channels, model.config.latent_channels) == (384, 16, 96)
    torch.manual_seed(4)
    x = torch.randn(1, 96, 8, 8)
    context, pooled, t, g = torch.randn(1, 5, 48), torch.randn(1, 40), torch.tensor([0.8]), torch.tensor([30.0])
    with torch.no_grad():
        expected = ref(hidden_states=pack(x), encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                       img_ids=image_ids(8, 8), txt_ids=torch.zeros(5, 3), guidance=g).sample
        got = model(x, t, context, y=pooled, guidance=g)
    assert got.shape == (1, 16, 8, 8)
    torch.testing.assert_close(got, unpack(expected, 16, 8, 8), atol=1e-4, rtol=1e-4)


def test_fill_conditioning_channels():
    """The masked image's latent in the model's format, then the pixel mask folded 8 x 8 into 64 channels."""
    from diffusion.sampling.guidance import _flux_concat
    from model_management.latent_formats import Flux as FluxFormat

    class Model:
        latent_format = FluxFormat()
    image = torch.randn(1, 16, 4, 6)
    mask = torch.zeros(32, 48)
    mask[:8, :8] = 1.0  # the first latent cell's pixels
    mask[9, 10] = 1.0  # one pixel of cell (1, 1): row 1, column 2 inside it
    out = _flux_concat({"concat_latent_image": image, "concat_mask": mask}, torch.Size([1, 16, 4, 6]), Model(), 80)
    assert out.shape == (1, 80, 4, 6)  # the latent itself is put in front when sampling
    torch.testing.assert_close(out[:, :16], (image - 0.1159) * 0.3611)
    folded = out[:, 16:]
    assert torch.equal(folded[0, :, 0, 0], torch.ones(64)) and folded[0, 8 * 1 + 2, 1, 1] == 1.0
    assert folded.sum() == 65
    empty = _flux_concat({}, torch.Size([1, 16, 4, 6]), Model(), 80)
    torch.testing.assert_close(empty[:, :16], torch.full((1, 16, 4, 6), -0.1159 * 0.3611))
    assert empty.shape == (1, 16, 4, 6)  # no concat_mask: the sampler adds its noise mask (ones without one)
