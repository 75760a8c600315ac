"""Inpainting UNets (9 input channels): what Guidance concatenates onto the noisy latent, per entry, area and batch."""
from types import SimpleNamespace

import pytest
import torch

from diffusion.sampling.guidance import Guidance, prepare_conditioning
from model_management.detection import ModelFamily
from model_management.model_objects import DiffusionModel

SCALE = 0.18215


class _Recorder(torch.nn.Module):
    """A UNet with `in_channels` inputs that records what it gets and predicts eps = 0 (so x0 = x)."""

    def __init__(self, in_channels):
        super().__init__()
        self.config = SimpleNamespace(context_dim=8, adm_in_channels=None, in_channels=in_channels)
        self.inputs = []

    def forward(self, x, t, context, y=None, control=None, transformer_options=None):
        self.inputs.append((x.clone(), context.clone()))
        return torch.zeros(x.shape[0], 4, x.shape[2], x.shape[3])


def RecordingUNet(in_channels=9, family="sd1"):  # noqa: N802 - reads as the model it builds
    """A real MODEL (latent scale 0.18215) around the recording UNet."""
    return DiffusionModel(_Recorder(in_channels), ModelFamily(family))


def cond(value, **opts):
    return [torch.full((1, 77, 8), float(value)), opts]


def test_concat_from_conditioning_is_mask_then_scaled_latent_at_latent_size():
    model = RecordingUNet()
    latent = torch.randn(2, 4, 6, 8)
    image = torch.randn(2, 4, 6, 8)
    mask = torch.zeros(2, 48, 64)
    mask[:, :, :32] = 1.0  # left half in pixels = latent columns 0..3 (8-pixel aligned, so resizing is exact)
    positive = prepare_conditioning([cond(1, concat_latent_image=image, concat_mask=mask)], latent.shape, model)
    negative = prepare_conditioning([cond(2, concat_latent_image=image, concat_mask=mask)], latent.shape, model)
    sigma = torch.tensor([3.0])
    Guidance(model, positive, negative, cfg=5.0)(latent, sigma)
    (x, context), = model.unet.inputs  # positive and negative in one call
    assert x.shape == (4, 9, 6, 8)
    c_in = 1.0 / (3.0 ** 2 + 1.0) ** 0.5
    assert torch.allclose(x[:, :4], torch.cat([latent, latent]) * c_in, atol=1e-6)
    expected_mask = torch.zeros(6, 8)
    expected_mask[:, :4] = 1.0
    for half in (x[:2], x[2:]):
        assert torch.equal(half[:, 4], expected_mask.expand(2, 6, 8))
        assert torch.allclose(half[:, 5:], image * SCALE, atol=1e-6)
    assert context[0, 0, 0] == 1 and context[2, 0, 0] == 2


def test_concat_is_cropped_to_each_area_and_repeated_over_the_batch():
    model = RecordingUNet()
    latent = torch.zeros(3, 4, 8, 8)
    image = torch.arange(4 * 8 * 8, dtype=torch.float32).reshape(1, 4, 8, 8)  # one image for the whole batch
    mask = torch.rand(1, 8, 8)
    whole = cond(1, concat_latent_image=image, concat_mask=mask)
    corner = cond(1, concat_latent_image=image, concat_mask=mask, area=(2, 3, 4, 5))  # h, w, top, left (cells)
    entries = prepare_conditioning([whole, corner], latent.shape, model)
    Guidance(model, entries, None, cfg=1.0)(latent, torch.tensor([1.0]))
    shapes = sorted(tuple(x.shape) for x, _ in model.unet.inputs)
    assert shapes == [(3, 9, 2, 3), (3, 9, 8, 8)]
    small = next(x for x, _ in model.unet.inputs if x.shape[-1] == 3)
    assert torch.allclose(small[:, 5:], (image[:, :, 4:6, 5:8] * SCALE).expand(3, -1, -1, -1))
    assert torch.equal(small[:, 4], mask[:, 4:6, 5:8].round().expand(3, -1, -1))  # the model sees the rounded mask


def test_without_inpaint_inputs_the_model_gets_mask_one_and_the_grey_latent():
    model = RecordingUNet()
    latent = torch.zeros(2, 4, 4, 4)
    Guidance(model, prepare_conditioning([cond(1)], latent.shape, model), None, cfg=1.0)(latent, torch.tensor([1.0]))
    x = model.unet.inputs[0][0]
    assert torch.equal(x[:, 4], torch.ones(2, 4, 4))
    grey = torch.tensor([0.8223, -0.6876, 0.6364, 0.1380])
    assert torch.allclose(x[:, 5:], grey.view(1, 4, 1, 1).expand(2, 4, 4, 4))


def test_the_sampler_noise_mask_and_input_latent_are_the_default_concat():
    model = RecordingUNet()
    latent_in = torch.randn(2, 4, 4, 4)
    mask = torch.zeros(2, 4, 4, 4)
    mask[:, :, 1:3, 1:3] = 1.0
    g = Guidance(model, prepare_conditioning([cond(1)], latent_in.shape, model), None, cfg=1.0)
    g.set_inpaint_source(latent_in, mask)
    g(torch.zeros(2, 4, 4, 4), torch.tensor([1.0]))
    x = model.unet.inputs[0][0]
    assert torch.equal(x[:, 4], mask[:, 0])
    assert torch.equal(x[:, 5:], latent_in)


def test_plain_models_ignore_inpaint_conditioning_and_odd_channel_counts_fail_clearly():
    plain = RecordingUNet(in_channels=4)
    latent = torch.zeros(1, 4, 4, 4)
    opts = dict(concat_latent_image=torch.ones(1, 4, 4, 4), concat_mask=torch.ones(1, 32, 32))
    entries = prepare_conditioning([cond(1, **opts)], latent.shape, plain)
    assert entries[0].concat is None
    Guidance(plain, entries, None, cfg=1.0)(latent, torch.tensor([1.0]))
    assert plain.unet.inputs[0][0].shape[1] == 4
    odd = RecordingUNet(in_channels=8)
    g = Guidance(odd, prepare_conditioning([cond(1)], latent.shape, odd), None, cfg=1.0)
    with pytest.raises(ValueError, match="the latent has 4 channels but this model takes 8"):
        g(latent, torch.tensor([1.0]))


def test_concat_latent_of_the_wrong_shape_is_refused():
    model = RecordingUNet()
    with pytest.raises(ValueError, match="concat_latent_image"):
        prepare_conditioning([cond(1, concat_latent_image=torch.ones(1, 3, 4, 4))], (1, 4, 4, 4), model)
