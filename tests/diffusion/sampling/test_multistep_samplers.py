"""ipndm, ipndm_v, deis and res_multistep on the analytic Gaussian problem."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.sampling.registry import get_sampler
from diffusion.sampling.samplers_multistep import lagrange_integrals, vp_time
from tests.diffusion.sampling.analytic import gaussian_denoiser, initial_noise
from tests.diffusion.sampling.test_dpmpp_samplers import (MEAN, ODE_SHAPE, STD, assert_statistics, euler,
                                                          final_samples, karras, observed_order, ode_error)

NAMES = ["ipndm", "ipndm_v", "deis", "res_multistep"]
# lower bounds on the observed convergence order between 20 and 40 steps (σ_min = 0.002):
# iPNDM's equal-step coefficients and RES are second order on a Karras grid, the exact variable-step AB4 and
# tAB3-DEIS higher
MIN_ORDER = {"ipndm": 1.6, "ipndm_v": 2.8, "deis": 2.2, "res_multistep": 1.6}


def test_each_name_runs_this_module_s_own_function():
    """The table sends each name to the function of this family (a `_gpu` name to the same one)."""
    from diffusion.sampling import samplers_multistep as family
    for name in NAMES:
        assert get_sampler(name) is getattr(family, "sample_" + name.removesuffix("_gpu")), name


@pytest.mark.parametrize("name", NAMES)
def test_final_statistics(name):
    assert_statistics(final_samples(get_sampler(name), 20))


@pytest.mark.parametrize("name", NAMES)
def test_matches_exact_ode_and_beats_euler(name):
    fn = get_sampler(name)
    for steps in (10, 20):
        err, calls = ode_error(fn, steps)
        err_euler, calls_euler = ode_error(euler, steps)
        assert calls == calls_euler == steps
        assert err < 0.5 * err_euler, (steps, err, err_euler)
    assert ode_error(fn, 20)[0] < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_convergence_order(name):
    assert observed_order(get_sampler(name)) > MIN_ORDER[name]


def test_lagrange_integrals_are_exact_for_polynomials():
    nodes = [3.0, 2.5, 1.7, 1.0]
    weights = lagrange_integrals(nodes, 3.0, 2.2)
    for degree in range(4):
        exact = (2.2 ** (degree + 1) - 3.0 ** (degree + 1)) / (degree + 1)
        assert sum(w * n ** degree for w, n in zip(weights, nodes)) == pytest.approx(exact, rel=1e-12)
    # equal steps reproduce the classical Adams–Bashforth coefficients
    weights = lagrange_integrals([0.0, -1.0, -2.0, -3.0], 0.0, 1.0)
    assert np.allclose(weights, np.array([55, -59, 37, -9]) / 24, atol=1e-13)


def test_vp_time_inverts_the_linear_vp_schedule():
    t = np.linspace(0.0, 1.0, 11)
    sigma = np.sqrt(np.expm1(0.1 * t + 0.5 * 19.9 * t ** 2))
    assert np.allclose(vp_time(sigma), t, atol=1e-12)
    assert vp_time(0.0) == 0.0


def test_deis_rhoab_is_variable_step_ipndm():
    sigmas = karras(9, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    a = get_sampler("deis")(gaussian_denoiser(MEAN, STD), x_T, sigmas, mode="rhoab", max_order=4)
    b = get_sampler("ipndm_v")(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    assert torch.allclose(a, b, atol=1e-10)


def test_first_order_is_euler():
    sigmas = karras(9, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    ref = euler(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    for name, options in (("ipndm", {"max_order": 1}), ("ipndm_v", {"max_order": 1}), ("deis", {"max_order": 1})):
        out = get_sampler(name)(gaussian_denoiser(MEAN, STD), x_T, sigmas, **options)
        assert torch.allclose(out, ref, atol=1e-10), name


@pytest.mark.parametrize("name", NAMES)
def test_callbacks_and_partial_schedule(name):
    sigmas = karras(30, dtype=torch.float64)[:21]          # stops at σ > 0
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    model, seen = gaussian_denoiser(MEAN, STD), []
    out = get_sampler(name)(model, x_T, sigmas, callback=seen.append)
    assert model.calls == 20 and [info["i"] for info in seen] == list(range(20))
    s_end = float(sigmas[-1])
    exact = MEAN + (x_T - MEAN) * math.sqrt(STD ** 2 + s_end ** 2) / math.sqrt(STD ** 2 + float(sigmas[0]) ** 2)
    assert (out - exact).abs().max() < 5e-3


@pytest.mark.parametrize("name", NAMES + ["dpmpp_2m", "uni_pc", "uni_pc_bh2"])
def test_repeated_sigma_is_a_no_op_step(name):
    sigmas = karras(12, dtype=torch.float64)
    repeated = torch.cat([sigmas[:5], sigmas[4:]])
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    ref = get_sampler(name)(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    out = get_sampler(name)(gaussian_denoiser(MEAN, STD), x_T, repeated)
    assert torch.allclose(out, ref, atol=1e-12)
