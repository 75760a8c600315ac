"""Perp-Neg guidance (closed form, and its two nodes against plain CFG where they must agree) and the GITS
schedule (the table's shape rules: truncation for denoise, log-linear interpolation past 20 steps)."""
import pytest
import torch

from diffusion.sampling.ksampler import SamplerChoice, prepare_noise, sample
from model_management.checkpoints import load_checkpoint
from nodes.gits import gits_sigmas, noise_levels
from nodes.perp_neg import PerpNeg, PerpNegGuider, perp_neg
from nodes.sampling_objects import Guider


def test_perp_neg_removes_only_the_perpendicular_part():
    nocond = torch.zeros(1, 2)
    pos = torch.tensor([[1.0, 0.0]])
    along = torch.tensor([[3.0, 0.0]])      # a negative along the positive direction: nothing removed
    torch.testing.assert_close(perp_neg(None, pos, along, nocond, 1.0, 5.0), 5.0 * pos)
    across = torch.tensor([[0.0, 2.0]])     # perpendicular: pushed away from at neg_scale
    torch.testing.assert_close(perp_neg(None, pos, across, nocond, 0.5, 5.0), torch.tensor([[5.0, -5.0]]))


@pytest.fixture(scope="module")
def sd1(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"))


def _conds(sd1):
    encode = lambda text: [[sd1.clip.encode(text)[0], {}]]  # noqa: E731
    return encode("a red cube"), encode("blurry"), encode("")


def _sigmas(model, steps=3):
    from diffusion.sampling.ksampler import calculate_sigmas
    return calculate_sigmas(model, "normal", steps)


def test_perp_neg_guider_at_neg_scale_zero_is_cfg_against_the_empty_prompt(sd1):
    positive, negative, empty = _conds(sd1)
    model = sd1.model
    latent = torch.zeros(1, 4, 8, 8)
    noise = prepare_noise(latent, 3)
    guider = PerpNegGuider.SPEC.execute(None, None, {"model": model, "positive": positive, "negative": negative,
                                                     "empty_conditioning": empty, "cfg": 4.0,
                                                     "neg_scale": 0.0})[0]
    got = guider.sample(noise, latent, SamplerChoice("euler"), _sigmas(model), seed=3)
    want = Guider(model, positive, empty, 4.0).sample(noise, latent, SamplerChoice("euler"), _sigmas(model), seed=3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    pushed = PerpNegGuider.SPEC.execute(None, None, {"model": model, "positive": positive, "negative": negative,
                                                     "empty_conditioning": empty, "cfg": 4.0,
                                                     "neg_scale": 3.0})[0]
    assert not torch.allclose(pushed.sample(noise, latent, SamplerChoice("euler"), _sigmas(model), seed=3), want)


def test_perp_neg_model_patch_at_neg_scale_zero_is_cfg_against_the_empty_prompt(sd1):
    positive, negative, empty = _conds(sd1)
    latent = torch.zeros(1, 4, 8, 8)
    noise = prepare_noise(latent, 5)
    patched = PerpNeg.SPEC.execute(None, None, {"model": sd1.model, "empty_conditioning": empty,
                                                "neg_scale": 0.0})[0]
    got, _ = sample(patched, noise, positive, negative, 4.0, SamplerChoice("euler"), _sigmas(sd1.model), latent, 5)
    want, _ = sample(sd1.model, noise, positive, empty, 4.0, SamplerChoice("euler"), _sigmas(sd1.model), latent, 5)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not sd1.model.model_options.get("sampler_cfg_function")  # the input MODEL is untouched


def test_gits_schedule_rules():
    table = noise_levels()["1.20"]
    ten = gits_sigmas(1.20, 10)
    assert ten.tolist()[:-1] == pytest.approx(table[8][:-1]) and float(ten[-1]) == 0.0 and len(ten) == 11
    half = gits_sigmas(1.20, 10, denoise=0.5)
    torch.testing.assert_close(half[:-1], ten[-6:-1])  # the last 5 steps of the 10-step schedule
    long = gits_sigmas(1.20, 25)
    assert len(long) == 26 and float(long[0]) == pytest.approx(table[-1][0]) and float(long[-1]) == 0.0
    assert torch.all(long[1:] < long[:-1])
    assert len(gits_sigmas(0.80, 2)) == 3 and len(gits_sigmas(1.20, 10, denoise=0.0)) == 0
