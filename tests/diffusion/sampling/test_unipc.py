"""UniPC (uni_pc = B(h) bh1, uni_pc_bh2) on the analytic Gaussian problem."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.sampling.registry import get_sampler
from diffusion.sampling.samplers_dpmpp import phi
from diffusion.sampling.samplers_unipc import unipc_weights
from tests.diffusion.sampling.analytic import gaussian_denoiser, initial_noise
from tests.diffusion.sampling.test_dpmpp_samplers import (MEAN, ODE_SHAPE, STD, assert_statistics, euler,
                                                          final_samples, karras, observed_order, ode_error)

NAMES = ["uni_pc", "uni_pc_bh2"]


def test_each_name_runs_this_module_s_own_function():
    """The table sends each name to the function of this family (a `_gpu` name to the same one)."""
    from diffusion.sampling import samplers_unipc as family
    for name in NAMES:
        assert get_sampler(name) is getattr(family, "sample_" + name.removesuffix("_gpu")), name


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_weights_satisfy_the_order_conditions(variant):
    h, rs = 0.7, [-0.8, -1.9, 1.0]
    a, b_h = unipc_weights(rs, h, variant)
    assert b_h == pytest.approx(h if variant == "bh1" else 1 - math.exp(-h))
    for k in range(1, len(rs) + 1):
        lhs = b_h * sum(a_m * r ** (k - 1) for a_m, r in zip(a, rs))
        assert lhs == pytest.approx(math.factorial(k) * h * phi(k + 1, -h), rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_final_statistics(name):
    assert_statistics(final_samples(get_sampler(name), 20))


@pytest.mark.parametrize("name", NAMES)
def test_matches_exact_ode_and_beats_euler(name):
    fn = get_sampler(name)
    for steps in (10, 20):
        err, calls = ode_error(fn, steps)
        err_euler, calls_euler = ode_error(euler, steps)
        assert calls == calls_euler == steps         # the corrector reuses the next step's model call
        assert err < 0.5 * err_euler, (steps, err, err_euler)
    assert ode_error(fn, 20)[0] < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_convergence_order(name):
    assert observed_order(get_sampler(name)) > 2.8
    # the corrector raises the order: order-1 predictor + UniC is second order
    assert observed_order(get_sampler(name), order=1) > 1.7


def test_variants_differ_only_through_the_second_order_predictor():
    sigmas = karras(8, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    a = get_sampler("uni_pc")(gaussian_denoiser(MEAN, STD), x_T, sigmas, order=2)
    b = get_sampler("uni_pc_bh2")(gaussian_denoiser(MEAN, STD), x_T, sigmas, order=2)
    assert (a - b).abs().max() > 1e-3
    a = get_sampler("uni_pc")(gaussian_denoiser(MEAN, STD), x_T, sigmas, order=1)
    b = get_sampler("uni_pc_bh2")(gaussian_denoiser(MEAN, STD), x_T, sigmas, order=1)
    assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_callbacks_final_denoised_and_partial_schedule(name):
    fn = get_sampler(name)
    sigmas = karras(12, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    model, seen = gaussian_denoiser(MEAN, STD), []
    out = fn(model, x_T, sigmas, callback=seen.append)
    assert model.calls == 12 and [info["i"] for info in seen] == list(range(12))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert torch.equal(out, seen[-1]["denoised"])
    # a schedule that stops at σ > 0: no model call after the last step, ends near the ODE solution there
    sigmas = karras(30, dtype=torch.float64)[:21]
    model = gaussian_denoiser(MEAN, STD)
    out = fn(model, x_T, sigmas)
    assert model.calls == 20
    s_end = float(sigmas[-1])
    exact = MEAN + (x_T - MEAN) * math.sqrt(STD ** 2 + s_end ** 2) / math.sqrt(STD ** 2 + float(sigmas[0]) ** 2)
    assert (out - exact).abs().max() < 5e-3
    # a single step to 0 is one model call returning D
    model = gaussian_denoiser(MEAN, STD)
    one = fn(model, x_T, sigmas.new_tensor([2.0, 0.0]))
    assert model.calls == 1 and torch.allclose(one, gaussian_denoiser(MEAN, STD)(x_T, torch.tensor([2.0])))
