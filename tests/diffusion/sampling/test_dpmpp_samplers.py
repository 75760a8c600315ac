"""DPM-Solver++ samplers on the analytic Gaussian problem (tests/diffusion/sampling/analytic.py).

Also holds the small helpers (Karras schedule, a reference Euler solver, error/statistics helpers) that
test_multistep_samplers.py and test_unipc.py import.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.sampling.noise import BrownianTreeNoiseSampler
from diffusion.sampling.registry import get_sampler
from diffusion.sampling.samplers_dpmpp import ancestral_split, phi
from tests.diffusion.sampling.analytic import exact_ode_solution, gaussian_denoiser, initial_noise

MEAN, STD = 0.5, 0.3
SIGMA_MIN, SIGMA_MAX = 0.0292, 14.6146
STATS_SHAPE = (4, 1, 50, 100)          # 20000 samples, batch of 4
ODE_SHAPE = (2, 1, 30, 40)


def karras(n: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = 7.0,
           dtype=torch.float32) -> torch.Tensor:
    """Karras et al. 2022 schedule of n sigmas from sigma_max to sigma_min, then a final 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype)


def euler(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Reference first-order solver of dx/dσ = (x − D)/σ (Karras et al. 2022, Algorithm 1 without the Heun step)."""
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * x.new_ones([x.shape[0]]))
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
    return x


def ode_error(fn, steps: int, sigma_min: float = SIGMA_MIN, **options):
    """(RMS error against the exact ODE endpoint, model calls) in float64."""
    sigmas = karras(steps, sigma_min, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD, seed=0).double()
    model = gaussian_denoiser(MEAN, STD)
    out = fn(model, x_T, sigmas, **options)
    exact = exact_ode_solution(x_T, float(sigmas[0]), MEAN, STD)
    return (out - exact).pow(2).mean().sqrt().item(), model.calls


def observed_order(fn, steps=(20, 40), sigma_min: float = 0.002, **options) -> float:
    """log2 of the error ratio between two step counts (schedule down to σ = 0.002, where the final denoising step's
    own error is negligible)."""
    (e1, _), (e2, _) = (ode_error(fn, n, sigma_min, **options) for n in steps)
    assert e2 < e1
    return math.log(e1 / e2) / math.log(steps[1] / steps[0])


def final_samples(fn, steps: int, seed: int = 1, **options) -> torch.Tensor:
    sigmas = karras(steps)
    x_T = initial_noise(STATS_SHAPE, float(sigmas[0]), MEAN, STD, seed=seed)
    return fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": seed}, **options)


def assert_statistics(out: torch.Tensor) -> None:
    assert torch.isfinite(out).all()
    assert abs(out.mean().item() - MEAN) < 0.02
    assert abs(out.std().item() / STD - 1.0) < 0.05


STOCHASTIC = ["dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"]
ALL = STOCHASTIC + ["dpmpp_2m"]


def test_each_name_runs_this_module_s_own_function():
    """The table sends each name to the function of this family (a `_gpu` name to the same one)."""
    from diffusion.sampling import samplers_dpmpp as family
    for name in ALL:
        assert get_sampler(name) is getattr(family, "sample_" + name.removesuffix("_gpu")), name


def test_phi_matches_quadrature_and_is_stable():
    gx, gw = np.polynomial.legendre.leggauss(60)
    theta, w = 0.5 * (gx + 1), 0.5 * gw
    for k in range(1, 5):
        assert phi(k, 0.0) == pytest.approx(1 / math.factorial(k), rel=1e-15)
        for z in (-40.0, -7.0, -1.0, -0.999, -0.3, -1e-4, -1e-12, 1e-8, 0.5, 2.0):
            direct = float(np.sum(w * np.exp((1 - theta) * z) * theta ** (k - 1))) / math.factorial(k - 1)
            assert phi(k, z) == pytest.approx(direct, rel=1e-12, abs=1e-300), (k, z)
    assert phi(1, -1e-20) == 1.0 and phi(0, -1.0) == pytest.approx(math.exp(-1))


def test_ancestral_split():
    down, up = ancestral_split(2.0, 1.0, 1.0)
    assert down ** 2 + up ** 2 == pytest.approx(1.0)
    assert up == pytest.approx(math.sqrt(1.0 * (4.0 - 1.0) / 4.0))
    assert ancestral_split(2.0, 1.0, 0.0) == (1.0, 0.0)
    assert ancestral_split(2.0, 0.0, 1.0) == (0.0, 0.0)


@pytest.mark.parametrize("name", ALL)
def test_final_statistics(name):
    assert_statistics(final_samples(get_sampler(name), 30))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_noise_is_deterministic(name):
    fn = get_sampler(name)
    a = final_samples(fn, 8, seed=5)
    b = final_samples(fn, 8, seed=5)
    sigmas = karras(8)
    x_T = initial_noise(STATS_SHAPE, float(sigmas[0]), MEAN, STD, seed=5)
    c = fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 6})
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde"])
def test_sde_default_noise_is_brownian_tree_of_the_seed(name):
    fn = get_sampler(name)
    sigmas = karras(6)
    x_T = initial_noise((1, 1, 8, 8), float(sigmas[0]), MEAN, STD, seed=3)
    default = fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 11})
    tree = BrownianTreeNoiseSampler(x_T, float(sigmas[-2]), float(sigmas[0]), seed=11)
    explicit = fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 11}, noise_sampler=tree)
    assert torch.allclose(default, explicit)


def test_dpmpp_2m_beats_euler_and_is_second_order():
    for steps in (10, 20):
        err, calls = ode_error(get_sampler("dpmpp_2m"), steps)
        err_euler, calls_euler = ode_error(euler, steps)
        assert calls == calls_euler == steps
        assert err < 0.5 * err_euler
    assert ode_error(get_sampler("dpmpp_2m"), 20)[0] < 0.01
    assert observed_order(get_sampler("dpmpp_2m")) > 1.6


def test_eta_zero_reduces_to_the_ode_solvers():
    two_m = get_sampler("dpmpp_2m")
    sigmas = karras(12, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD, seed=2).double()
    ref = two_m(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    sde = get_sampler("dpmpp_2m_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, eta=0.0)
    assert torch.allclose(ref, sde, atol=1e-12)
    # the deterministic cores are ODE solvers of orders 2 (singlestep 2S) and 3 (3M)
    for name in ("dpmpp_2s_ancestral", "dpmpp_sde"):
        assert observed_order(get_sampler(name), eta=0.0) > 1.7
    assert observed_order(get_sampler("dpmpp_3m_sde"), eta=0.0) > 2.5
    assert observed_order(get_sampler("dpmpp_2m_sde"), eta=0.0, solver_type="heun") > 1.7


def test_model_calls_and_callbacks():
    sigmas = karras(7)
    x_T = initial_noise((1, 1, 4, 4), float(sigmas[0]), MEAN, STD)
    expected_calls = {"dpmpp_2m": 7, "dpmpp_2m_sde": 7, "dpmpp_3m_sde": 7, "dpmpp_2s_ancestral": 13,
                      "dpmpp_sde": 13}
    for name, calls in expected_calls.items():
        model, seen = gaussian_denoiser(MEAN, STD), []
        out = get_sampler(name)(model, x_T, sigmas, extra_args={"seed": 0}, callback=seen.append)
        assert model.calls == calls, name
        assert [info["i"] for info in seen] == list(range(7))
        assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert torch.equal(out, seen[-1]["denoised"])      # the step to σ = 0 returns the data prediction


def test_partial_schedule_ends_at_the_last_sigma():
    """A schedule that stops at σ > 0 (KSamplerAdvanced leftover noise) ends on the ODE solution there."""
    sigmas = karras(30, dtype=torch.float64)[:21]
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    s_end = float(sigmas[-1])
    exact = MEAN + (x_T - MEAN) * math.sqrt(STD ** 2 + s_end ** 2) / math.sqrt(STD ** 2 + float(sigmas[0]) ** 2)
    out = get_sampler("dpmpp_2m")(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    assert (out - exact).abs().max() < 5e-3
    out = get_sampler("dpmpp_2m_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 1})
    assert torch.isfinite(out).all()
    assert abs(out.std().item() / math.sqrt(STD ** 2 + s_end ** 2) - 1) < 0.1
