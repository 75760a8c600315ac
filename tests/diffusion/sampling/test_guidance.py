"""Guidance: CFG, areas, masks, strengths, timestep ranges, batching, SDXL size vectors, RescaleCFG."""
from types import SimpleNamespace

import pytest
import torch

from diffusion.sampling.guidance import Guidance, prepare_conditioning, rescale_cfg
from model_management.detection import ModelFamily
from model_management.model_objects import DiffusionModel


class EchoUNet(torch.nn.Module):
    """A UNet whose eps prediction is the mean of its context: x0 = x - sigma * mean(context). Exact to check."""

    def __init__(self, context_dim=8, adm=None):
        super().__init__()
        self.config = SimpleNamespace(context_dim=context_dim, adm_in_channels=adm)
        self.calls = []

    def forward(self, x, t, context, y=None, control=None, transformer_options=None):
        self.calls.append((x.shape[0], y))
        return context.mean(dim=(1, 2)).view(-1, 1, 1, 1).expand_as(x).clone()


def ContextEcho(context_dim=8, adm=None, family="sd1"):  # noqa: N802 - reads as the model it builds
    """A real MODEL (eps prediction, the SD schedule) around the echoing UNet."""
    return DiffusionModel(EchoUNet(context_dim, adm), ModelFamily(family))


def cond(value, **opts):
    return [torch.full((1, 77, 8), float(value)), opts]


X = torch.zeros(1, 4, 16, 16)
SIGMA = torch.tensor([2.0])


def test_plain_cfg_and_one_batched_call_for_cond_and_uncond():
    model = ContextEcho()
    g = Guidance(model, prepare_conditioning([cond(1)], X.shape, model),
                 prepare_conditioning([cond(3)], X.shape, model), cfg=2.0)
    out = g(X, SIGMA)
    # cond x0 = -2, uncond x0 = -6: uncond + (cond - uncond) * 2 = 2
    assert torch.allclose(out, torch.full_like(X, 2.0))
    assert torch.allclose(g.uncond_denoised, torch.full_like(X, -6.0))
    assert len(model.unet.calls) == 1 and model.unet.calls[0][0] == 2  # positive and negative share one UNet call


def test_cfg_one_skips_the_negative():
    model = ContextEcho()
    g = Guidance(model, prepare_conditioning([cond(1)], X.shape, model),
                 prepare_conditioning([cond(3)], X.shape, model), cfg=1.0)
    assert torch.allclose(g(X, SIGMA), torch.full_like(X, -2.0)) and model.unet.calls[0][0] == 1
    assert g.uncond_denoised is None


def test_area_conditioning_applies_inside_its_area_only():
    model = ContextEcho()
    left = cond(1, area=(16, 10, 0, 0), strength=1.0)  # (h, w, top, left) in latent cells
    right = cond(5, area=(16, 10, 0, 6), strength=1.0)  # overlapping columns 6..9
    g = Guidance(model, prepare_conditioning([left, right], X.shape, model), None, cfg=1.0)
    out = g(X, SIGMA)
    assert torch.allclose(out[..., 4, 1], torch.tensor(-2.0)) and torch.allclose(out[..., 4, 14], torch.tensor(-10.0))
    middle = out[0, 0, 4, 6:10]
    assert (middle > -10).all() and (middle < -2).all()  # blended where the areas overlap
    assert (middle[1:] <= middle[:-1]).all() and middle[-1] < middle[0]  # feathered: a ramp, not a cut


def test_percentage_area_mask_and_strength():
    model = ContextEcho()
    base = cond(1)
    corner = cond(9, area=("percentage", 0.5, 0.5, 0.0, 0.0), strength=3.0)
    g = Guidance(model, prepare_conditioning([base, corner], X.shape, model), None, cfg=1.0)
    out = g(X, SIGMA)
    assert torch.allclose(out[0, 0, 15, 15], torch.tensor(-2.0))
    expected = -(1 * 1 + 9 * 3) / 4 * 2.0  # strength-weighted average of x0s in the corner's interior
    assert torch.allclose(out[0, 0, 2, 2], torch.tensor(expected))
    mask = torch.zeros(1, 32, 32)
    mask[:, :, 16:] = 1.0
    masked = cond(9, mask=mask, mask_strength=1.0)
    g = Guidance(model, prepare_conditioning([base, masked], X.shape, model), None, cfg=1.0)
    out = g(X, SIGMA)
    assert torch.allclose(out[0, 0, 5, 2], torch.tensor(-2.0))
    assert torch.allclose(out[0, 0, 5, 13], torch.tensor(-10.0))  # average of 1 and 9 where the mask is 1


def test_timestep_ranges_switch_conditionings_on_and_off():
    model = ContextEcho()
    early = cond(1, start_percent=0.0, end_percent=0.5)
    late = cond(7, start_percent=0.5, end_percent=1.0)
    g = Guidance(model, prepare_conditioning([early, late], X.shape, model), None, cfg=1.0)
    high, low = torch.tensor([14.0]), torch.tensor([0.1])
    assert torch.allclose(g(X, high), torch.full_like(X, -14.0))
    assert torch.allclose(g(X, low), torch.full_like(X, -0.7))


def test_sdxl_size_vector_and_family_mismatch():
    model = ContextEcho(adm=32 + 6 * 256, family="sdxl")
    pooled = torch.randn(1, 32)
    entries = prepare_conditioning([cond(1, pooled_output=pooled, width=1024, height=768)], X.shape, model)
    y = entries[0].y
    assert y.shape == (1, 32 + 6 * 256) and torch.equal(y[:, :32], pooled)
    defaults = prepare_conditioning([cond(1, pooled_output=pooled)], X.shape, model)[0].y
    assert not torch.equal(defaults, y)  # size ids default to the latent size (128 x 128 pixels here)
    with pytest.raises(ValueError, match="pooled"):
        prepare_conditioning([cond(1)], X.shape, model)
    with pytest.raises(ValueError, match="different families"):
        prepare_conditioning([[torch.zeros(1, 77, 16), {}]], X.shape, ContextEcho())


def test_rescale_cfg_matches_the_published_formula():
    x = torch.randn(1, 4, 8, 8)
    sigma = torch.tensor([3.0])
    cond_x0, uncond_x0 = torch.randn_like(x), torch.randn_like(x)
    out = rescale_cfg(0.7)(cond_x0, uncond_x0, 5.0, x, sigma)
    eps_c, eps_u = (x - cond_x0) / 3, (x - uncond_x0) / 3
    eps_cfg = eps_u + 5 * (eps_c - eps_u)
    rescaled = eps_cfg * eps_c.std() / eps_cfg.std()
    expected = x - (0.7 * rescaled + 0.3 * eps_cfg) * 3
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(rescale_cfg(0.0)(cond_x0, uncond_x0, 5.0, x, sigma),
                          uncond_x0 + (cond_x0 - uncond_x0) * 5, atol=1e-5)
