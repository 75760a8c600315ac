"""KSampler's schedule rules: the samplers that drop the second-to-last sigma, with and without denoise."""
import pytest
import torch

from diffusion.sampling.ksampler import DISCARD_PENULTIMATE_SIGMA_SAMPLERS, calculate_sigmas
from diffusion.sampling.model_sampling import DiscreteModelSampling
from diffusion.sampling.registry import get_scheduler


class _Model:
    model_sampling = DiscreteModelSampling()


@pytest.mark.parametrize("sampler", sorted(DISCARD_PENULTIMATE_SIGMA_SAMPLERS))
def test_discarding_samplers_get_one_step_more_without_the_penultimate(sampler):
    longer = get_scheduler("karras")(_Model.model_sampling, 6)
    got = calculate_sigmas(_Model, "karras", 5, sampler=sampler)
    assert len(got) == 6
    torch.testing.assert_close(got, torch.cat([longer[:-2], longer[-1:]]).float())


def test_other_samplers_and_basic_scheduler_keep_the_plain_schedule():
    plain = get_scheduler("normal")(_Model.model_sampling, 5).float()
    torch.testing.assert_close(calculate_sigmas(_Model, "normal", 5, sampler="euler"), plain)
    torch.testing.assert_close(calculate_sigmas(_Model, "normal", 5), plain)


def test_discard_applies_before_the_denoise_slice():
    longer = get_scheduler("normal")(_Model.model_sampling, 11)  # int(5 / 0.5) + 1 steps
    want = torch.cat([longer[:-2], longer[-1:]])[-6:].float()
    torch.testing.assert_close(calculate_sigmas(_Model, "normal", 5, 0.5, sampler="uni_pc"), want)
