"""dpmpp_2m_sde_heun, er_sde, seeds_2/3, exp_heun_2_x0(_sde), sa_solver(_pece) on the analytic Gaussian problem.

With their noise switched off (η = 0, the identity ER-SDE noise scale, τ = 0) they are ODE solvers and must converge
to the exact probability-flow solution with their order; with noise they must reach the data marginal, and their
noise must be the seeded Brownian tree.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.sampling.model_sampling import DiscreteModelSampling
from diffusion.sampling.noise import BrownianTreeNoiseSampler
from diffusion.sampling.registry import get_sampler, sampler_names
from diffusion.sampling.samplers_dpmpp import phi
from diffusion.sampling.samplers_sde_extra import (_log_quadrature, _Noise, default_tau, er_sde_noise_scaler,
                                                   exp_lagrange_weights)
from tests.diffusion.sampling.analytic import gaussian_denoiser, initial_noise
from tests.diffusion.sampling.test_dpmpp_samplers import (MEAN, STD, assert_statistics, euler, final_samples, karras,
                                                          observed_order, ode_error)

STOCHASTIC = ["dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "er_sde", "seeds_2", "seeds_3", "exp_heun_2_x0_sde",
              "sa_solver", "sa_solver_pece"]
ALL = STOCHASTIC + ["exp_heun_2_x0"]
IDENTITY = lambda sigma: sigma          # noqa: E731  ER-SDE noise scale of the probability-flow ODE
NO_TAU = lambda sigma: 0.0              # noqa: E731  SA-Solver without stochasticity

# (name, options that switch the noise off, minimum observed order between 20 and 40 steps)
ODE_CASES = [
    ("dpmpp_2m_sde_heun", {"eta": 0.0}, 1.7),
    ("er_sde", {"noise_scaler": IDENTITY}, 2.2),
    ("er_sde", {"noise_scaler": IDENTITY, "max_stage": 2}, 1.9),
    ("seeds_2", {"eta": 0.0}, 1.8),
    ("seeds_2", {"eta": 0.0, "solver_type": "phi_2"}, 1.8),
    ("seeds_3", {"eta": 0.0}, 2.7),
    ("exp_heun_2_x0", {}, 1.8),
    ("sa_solver", {"tau_func": NO_TAU}, 2.7),
    ("sa_solver_pece", {"tau_func": NO_TAU}, 2.7),
]


def test_registered_in_editor_order():
    names = sampler_names()
    for name in ALL:
        assert callable(get_sampler(name))
    assert names.index("dpmpp_2m_sde_heun") == names.index("dpmpp_2m_sde_gpu") + 1
    assert names.index("er_sde") < names.index("seeds_2") < names.index("seeds_3") < names.index("sa_solver")
    assert get_sampler("dpmpp_2m_sde_heun_gpu") is get_sampler("dpmpp_2m_sde_heun")


@pytest.mark.parametrize("name,options,min_order", ODE_CASES)
def test_noise_free_variants_converge_to_the_exact_ode_solution(name, options, min_order):
    fn = get_sampler(name)
    for steps in (10, 20):
        err, _ = ode_error(fn, steps, **options)
        err_euler, _ = ode_error(euler, steps)
        assert err < 0.5 * err_euler, (steps, err, err_euler)
    assert observed_order(fn, **options) > min_order


def test_er_sde_first_stage_with_identity_scale_is_euler():
    sigmas = karras(9, dtype=torch.float64)
    x_T = initial_noise((1, 1, 6, 6), float(sigmas[0]), MEAN, STD).double()
    out = get_sampler("er_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, noise_scaler=IDENTITY, max_stage=1)
    assert torch.allclose(out, euler(gaussian_denoiser(MEAN, STD), x_T, sigmas), atol=1e-12)
    assert observed_order(get_sampler("er_sde"), noise_scaler=IDENTITY, max_stage=1) < 1.2


def test_exp_heun_sde_without_noise_is_exp_heun_and_heun_variant_matches_solver_type():
    sigmas = karras(10, dtype=torch.float64)
    x_T = initial_noise((1, 1, 6, 6), float(sigmas[0]), MEAN, STD).double()
    det = get_sampler("exp_heun_2_x0")(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    sde = get_sampler("exp_heun_2_x0_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, eta=0.0)
    assert torch.allclose(det, sde, atol=1e-14)
    x_T = x_T.float()
    sigmas = sigmas.float()
    heun = get_sampler("dpmpp_2m_sde_heun")(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 4})
    ref = get_sampler("dpmpp_2m_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 4},
                                      solver_type="heun")
    mid = get_sampler("dpmpp_2m_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 4})
    assert torch.equal(heun, ref)
    assert (heun - mid).abs().max() > 1e-4


@pytest.mark.parametrize("name", STOCHASTIC)
def test_final_statistics(name):
    assert_statistics(final_samples(get_sampler(name), 30))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_seeded_noise_is_deterministic_and_is_the_brownian_tree(name):
    fn = get_sampler(name)
    a = final_samples(fn, 8, seed=5)
    b = final_samples(fn, 8, seed=5)
    sigmas = karras(8)
    x_T = initial_noise(a.shape, float(sigmas[0]), MEAN, STD, seed=5)
    c = fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 6})
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3
    tree = BrownianTreeNoiseSampler(x_T, float(sigmas[-2]), float(sigmas[0]), seed=5)
    explicit = fn(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 5}, noise_sampler=tree)
    assert torch.allclose(a, explicit)


def test_split_step_noise_has_the_exact_variance():
    """N(s→t) assembled from three sub-steps has variance σ_t²(1 − e^{−2ηh}), like a single step."""
    gen = torch.Generator().manual_seed(0)
    shape = (400_000,)
    iid = lambda s, t: torch.randn(shape, generator=gen, dtype=torch.float64)  # noqa: E731
    sigma, sigma_next, eta = 3.0, 1.2, 0.7
    h = math.log(sigma / sigma_next)
    noise = _Noise(iid, sigma, eta, s_noise=1.0)
    for frac in (0.2, 0.75, 1.0):
        total = noise.advance(sigma * math.exp(-frac * h))
    assert noise.advance(sigma_next) is total                # a stage ending at the step's end adds nothing
    expected = sigma_next ** 2 * -math.expm1(-2 * eta * h)
    assert total.var().item() == pytest.approx(expected, rel=0.01)
    assert _Noise(iid, sigma, 0.0, 1.0).advance(sigma_next) is None


def test_quadrature_helpers():
    h, a = 0.8, 1.6
    weights = exp_lagrange_weights([0.0, -0.5, -1.1], h, a)
    assert sum(weights) == pytest.approx(-math.expm1(-a * h), rel=1e-13)
    # Σ_j w_j·p(u_j) integrates the polynomial p(u) = u exactly: a·h²·φ2(−ah)
    assert sum(w * u for w, u in zip(weights, [0.0, -0.5, -1.1])) == pytest.approx(a * h * h * phi(2, -a * h),
                                                                                   rel=1e-12)
    assert _log_quadrature(lambda s: 1.0 / s, 0.03, 14.6) == pytest.approx(math.log(14.6 / 0.03), rel=1e-12)
    assert float(er_sde_noise_scaler(1.0)) == pytest.approx(math.e + 10.0)
    ratios = [float(er_sde_noise_scaler(s)) / s for s in (0.01, 0.1, 1.0, 10.0)]
    assert ratios == sorted(ratios)                          # variance of every ER-SDE step is non-negative


def test_sa_solver_default_tau_follows_the_model_sampling():
    sampling = DiscreteModelSampling()
    model = gaussian_denoiser(MEAN, STD)
    assert default_tau(model)(100.0) == 1.0                  # no sampling object: τ = 1 everywhere
    model.sampling = sampling
    tau = default_tau(model)
    assert tau(sampling.sigma_max) == 0.0 and tau(sampling.sigma_min) == 0.0
    assert tau(float(sampling.percent_to_sigma(0.5))) == 1.0
    # a schedule that stays above the 20 % sigma never injects noise: the default run is the deterministic solver
    sigmas = karras(8, 1.01 * float(sampling.percent_to_sigma(0.2)), sampling.sigma_max)
    x_T = initial_noise((1, 1, 6, 6), float(sigmas[0]), MEAN, STD)
    out = get_sampler("sa_solver")(model, x_T, sigmas, extra_args={"seed": 1})
    det = get_sampler("sa_solver")(gaussian_denoiser(MEAN, STD), x_T, sigmas, tau_func=NO_TAU)
    assert torch.equal(out, det)
    # one inside the middle range does
    sigmas = karras(8, float(sampling.percent_to_sigma(0.7)), float(sampling.percent_to_sigma(0.3)))
    out = get_sampler("sa_solver")(model, x_T, sigmas, extra_args={"seed": 1})
    det = get_sampler("sa_solver")(gaussian_denoiser(MEAN, STD), x_T, sigmas, tau_func=NO_TAU)
    assert (out - det).abs().mean() > 1e-3


def test_model_calls_and_callbacks():
    sigmas = karras(7)
    x_T = initial_noise((1, 1, 4, 4), float(sigmas[0]), MEAN, STD)
    expected_calls = {"dpmpp_2m_sde_heun": 7, "er_sde": 7, "seeds_2": 13, "seeds_3": 19, "exp_heun_2_x0": 13,
                      "exp_heun_2_x0_sde": 13, "sa_solver": 8, "sa_solver_pece": 13}
    for name, calls in expected_calls.items():
        model, seen = gaussian_denoiser(MEAN, STD), []
        out = get_sampler(name)(model, x_T, sigmas, extra_args={"seed": 0}, callback=seen.append)
        assert model.calls == calls, name
        assert [info["i"] for info in seen] == list(range(7)), name
        assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert torch.isfinite(out).all()
        if name != "sa_solver":                              # PEC re-evaluates at the corrected point at the end
            assert torch.equal(out, seen[-1]["denoised"]), name


@pytest.mark.parametrize("name,options,word", [
    ("er_sde", {"max_stage": 4}, "max_stage"),
    ("seeds_2", {"solver_type": "rk4"}, "solver_type"),
    ("seeds_2", {"r": 0.0}, "r must"),
    ("seeds_3", {"r_1": 0.7, "r_2": 0.5}, "r_1"),
    ("exp_heun_2_x0_sde", {"eta": -1.0}, "eta"),
    ("sa_solver", {"predictor_order": 0}, "predictor_order"),
    ("sa_solver_pece", {"s_noise": -0.5}, "s_noise"),
])
def test_bad_options_are_rejected(name, options, word):
    sigmas = karras(4)
    x_T = initial_noise((1, 1, 2, 2), float(sigmas[0]), MEAN, STD)
    with pytest.raises(ValueError, match=word):
        get_sampler(name)(gaussian_denoiser(MEAN, STD), x_T, sigmas, **options)


def test_partial_schedule_ends_near_the_noisy_marginal():
    """A schedule stopping at σ > 0 (KSamplerAdvanced leftover noise) keeps the marginal std there."""
    sigmas = karras(30)[:21]
    s_end = float(sigmas[-1])
    for name in ("er_sde", "seeds_2", "sa_solver"):
        x_T = initial_noise((4, 1, 50, 100), float(sigmas[0]), MEAN, STD, seed=3)
        out = get_sampler(name)(gaussian_denoiser(MEAN, STD), x_T, sigmas, extra_args={"seed": 3})
        assert abs(out.std().item() / math.sqrt(STD ** 2 + s_end ** 2) - 1) < 0.05, name


@pytest.mark.parametrize("name", ["sa_solver", "sa_solver_pece"])
def test_sa_corrector_raises_the_order_of_the_predictor(name):
    fn = get_sampler(name)
    assert observed_order(fn, tau_func=NO_TAU, predictor_order=1, corrector_order=0) < 1.2
    assert observed_order(fn, tau_func=NO_TAU, predictor_order=1, corrector_order=2) > 1.8
    assert observed_order(fn, tau_func=NO_TAU, predictor_order=2, corrector_order=3) > 2.7
