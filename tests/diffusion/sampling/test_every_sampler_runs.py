"""Every registered sampler runs through KSampler's path (guidance, CFG, inpaint noise mask) on a real tiny model:
finite output of the right shape, the same seed gives the same latent, and the noise mask keeps its region."""
import pytest
import torch

from diffusion.sampling.registry import sampler_names
from model_management.checkpoints import load_checkpoint
from nodes.sampling import common_ksampler


@pytest.fixture(scope="module")
def tiny(tiny_models):
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    pos = [[loaded.clip.encode("a red house")[0], {}]]
    neg = [[loaded.clip.encode("blurry")[0], {}]]
    return loaded.model, pos, neg


@pytest.mark.parametrize("name", sampler_names())
def test_sampler_runs_deterministically_and_respects_the_mask(tiny, name):
    model, pos, neg = tiny
    torch.manual_seed(0)
    base = torch.randn(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, 4:] = 1.0
    latent = {"samples": base, "noise_mask": mask}
    first = common_ksampler(None, model, 7, 4, 3.0, name, "karras", pos, neg, latent, denoise=0.8)["samples"]
    again = common_ksampler(None, model, 7, 4, 3.0, name, "karras", pos, neg, latent, denoise=0.8)["samples"]
    assert first.shape == base.shape and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert torch.allclose(first[..., :4], base[..., :4], atol=1e-5)  # outside the mask: the input latent
    assert not torch.allclose(first[..., 4:], base[..., 4:])
