"""The rectified-flow ancestral samplers against their formulas on a stub denoiser with a known x0, and the
switch: euler_ancestral / dpmpp_2s_ancestral on a flow model take them, on an SD model keep the SD rule."""
import math

import pytest
import torch

from diffusion.sampling.model_sampling import DiscreteModelSampling
from diffusion.sampling.model_sampling_flow import FlowModelSampling
from diffusion.sampling.samplers_basic import sample_euler_ancestral
from diffusion.sampling.samplers_dpmpp import sample_dpmpp_2s_ancestral
from diffusion.sampling.samplers_rf import rf_ancestral_step


class Stub:
    """A denoiser that always predicts x0 = `target`, with the model sampling a Guidance has."""

    def __init__(self, sampling, target):
        self.sampling, self.target, self.calls = sampling, target, []

    def __call__(self, x, sigma, **_):
        self.calls.append(float(sigma[0]))
        return self.target.expand_as(x)


def fixed_noise(value):
    return lambda sigma, sigma_next: value


def test_step_coefficients_keep_the_flow_marginal():
    sigma, sigma_next = 0.8, 0.5
    down, lift, renoise = rf_ancestral_step(sigma, sigma_next, 1.0)
    assert math.isclose(down, sigma_next ** 2 / sigma)
    # after the lift the noise part is exactly sigma_next: (lift * down)^2 + renoise^2 = sigma_next^2
    assert math.isclose((lift * down) ** 2 + renoise ** 2, sigma_next ** 2)
    assert math.isclose(lift * (1 - down), 1 - sigma_next)  # and the x0 part is exactly 1 - sigma_next
    assert rf_ancestral_step(sigma, sigma_next, 0.0)[2] == 0.0


def test_euler_ancestral_on_a_flow_model_is_the_rf_step():
    target, x, z = torch.full((1, 1, 2, 2), 0.25), torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -1.0)
    sigmas = torch.tensor([0.8, 0.5, 0.0], dtype=torch.float64)
    stub = Stub(FlowModelSampling(3.0), target)
    out = sample_euler_ancestral(stub, x, sigmas, noise_sampler=fixed_noise(z))
    down, lift, renoise = rf_ancestral_step(0.8, 0.5, 1.0)
    ratio = down / 0.8
    after_first = lift * (ratio * x + (1 - ratio) * target) + renoise * z
    assert stub.calls == pytest.approx([0.8, 0.5]) and torch.allclose(out, target)  # the last step lands on x0
    stub_one = Stub(FlowModelSampling(3.0), target)
    one = sample_euler_ancestral(stub_one, x, sigmas[:2], noise_sampler=fixed_noise(z))
    torch.testing.assert_close(one, after_first)
    sd = sample_euler_ancestral(Stub(DiscreteModelSampling(), target), x, sigmas[:2], noise_sampler=fixed_noise(z))
    assert not torch.allclose(sd, after_first)  # SD models keep the variance-exploding rule


def test_dpmpp_2s_ancestral_on_a_flow_model_uses_the_lambda_midpoint():
    target, x, z = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    stub = Stub(FlowModelSampling(1.0), target)
    out = sample_dpmpp_2s_ancestral(stub, x, torch.tensor([0.6, 0.3], dtype=torch.float64), noise_sampler=fixed_noise(z))
    down, lift, _ = rf_ancestral_step(0.6, 0.3, 1.0)
    lam, lam_down = math.log(0.4 / 0.6), math.log((1 - down) / down)
    mid = 1 / (math.exp(lam + 0.5 * (lam_down - lam)) + 1)
    assert stub.calls == pytest.approx([0.6, mid])
    torch.testing.assert_close(out, torch.full_like(x, lift * down / 0.6))  # x0 = 0: only the line's x part
