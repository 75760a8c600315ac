"""DiscreteModelSampling facts and the schedulers (docs/architecture.md §7)."""
import math

import pytest
import torch

from diffusion.sampling import SCHEDULERS, get_scheduler, scheduler_names
from diffusion.sampling.model_sampling import (SIGMA_ABOVE_ALL, ZSNR_TERMINAL_ALPHA_CUMPROD, DiscreteModelSampling,
                                               rescale_zero_terminal_snr)
from diffusion.sampling.schedulers import (beta_cdf, beta_ppf, beta_sigmas, exponential_sigmas, karras_sigmas,
                                           linear_quadratic_sigmas, polyexponential_sigmas, sd_turbo_sigmas,
                                           sigmas_for_denoise)

SD = DiscreteModelSampling()
ALL_SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
                  "linear_quadratic", "kl_optimal"]


# -- model sampling ---------------------------------------------------------------------------------------------------

def test_sd_table_endpoints():
    assert SD.num_timesteps == 1000
    assert SD.sigma_min == pytest.approx(0.029167, abs=1e-6)
    assert SD.sigma_max == pytest.approx(14.614641, abs=1e-5)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    torch.testing.assert_close(SD.sigmas.double(), ((1 - ac) / ac).sqrt(), rtol=1e-6, atol=0)
    assert bool((SD.sigmas[1:] > SD.sigmas[:-1]).all())


def test_timestep_sigma_roundtrip_and_nearest_log_sigma():
    t = torch.arange(0, 1000, dtype=torch.float32)
    torch.testing.assert_close(SD.timestep(SD.sigma(t)), t)
    torch.testing.assert_close(SD.sigma(t), SD.sigmas)
    # a sigma between two entries maps to the entry nearer in log space
    lo, hi = float(SD.sigmas[500]), float(SD.sigmas[501])
    assert float(SD.timestep(math.exp(0.7 * math.log(lo) + 0.3 * math.log(hi)))) == 500
    assert float(SD.timestep(math.exp(0.3 * math.log(lo) + 0.7 * math.log(hi)))) == 501
    assert SD.timestep(torch.tensor([100.0, 1e-4])).tolist() == [999.0, 0.0]
    # fractional timesteps interpolate log sigma
    mid = float(SD.sigma(torch.tensor(500.5)))
    assert mid == pytest.approx(math.sqrt(lo * hi), rel=1e-5)


def test_percent_to_sigma():
    assert SD.percent_to_sigma(0.0) == SIGMA_ABOVE_ALL
    assert SD.percent_to_sigma(1.0) == 0.0
    assert SD.percent_to_sigma(0.5) == pytest.approx(float(SD.sigma(torch.tensor(499.5))), rel=1e-6)
    values = [SD.percent_to_sigma(p) for p in (0.0, 0.1, 0.5, 0.9, 1.0)]
    assert values == sorted(values, reverse=True)


def test_calculate_input_and_denoised_closed_forms():
    x = torch.randn(2, 4, 3, 3)
    out = torch.randn(2, 4, 3, 3)
    sigma = torch.tensor([2.0, 0.5])
    s = sigma.reshape(2, 1, 1, 1)
    torch.testing.assert_close(SD.calculate_input(sigma, x), x / (s ** 2 + 1).sqrt())
    torch.testing.assert_close(SD.calculate_denoised(sigma, out, x), x - s * out)
    v = DiscreteModelSampling("v")
    torch.testing.assert_close(v.calculate_denoised(sigma, out, x),
                               x / (s ** 2 + 1) - out * s / (s ** 2 + 1).sqrt())
    torch.testing.assert_close(DiscreteModelSampling("x0").calculate_denoised(sigma, out, x), out)
    with pytest.raises(ValueError):
        DiscreteModelSampling("flow")


def test_eps_and_v_denoise_exact_targets():
    """A network predicting the true eps / v yields the true x0."""
    x0, n = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigma = torch.tensor([0.1, 1.0, 14.0])
    s = sigma.reshape(3, 1, 1, 1)
    x = x0 + s * n
    torch.testing.assert_close(SD.calculate_denoised(sigma, n, x), x0, atol=1e-5, rtol=0)
    alpha, sig_vp = 1 / (1 + s ** 2).sqrt(), s / (1 + s ** 2).sqrt()
    v_target = alpha * n - sig_vp * x0
    torch.testing.assert_close(DiscreteModelSampling("v").calculate_denoised(sigma, v_target, x), x0,
                               atol=1e-5, rtol=0)


def test_noise_scaling():
    latent, noise = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    sigma = torch.tensor([14.614641])
    torch.testing.assert_close(SD.noise_scaling(sigma, noise, latent, max_denoise=True),
                               latent + noise * math.sqrt(1 + 14.614641 ** 2))
    torch.testing.assert_close(SD.noise_scaling(sigma, noise, latent), latent + noise * 14.614641)
    torch.testing.assert_close(SD.noise_scaling(3.0, noise, latent), latent + 3.0 * noise)
    assert SD.inverse_noise_scaling(sigma, latent) is latent


def test_zero_terminal_snr():
    z = DiscreteModelSampling("v", zero_terminal_snr=True)
    assert float(z.alphas_cumprod[-1]) == pytest.approx(ZSNR_TERMINAL_ALPHA_CUMPROD, rel=1e-6)
    assert float(z.alphas_cumprod[-1]) < 1e-7
    assert float(z.alphas_cumprod[0]) == pytest.approx(float(SD.alphas_cumprod[0]), rel=1e-6)
    assert z.sigma_min == pytest.approx(SD.sigma_min, rel=1e-5)
    assert math.isfinite(z.sigma_max) and z.sigma_max > 4000
    assert bool((z.sigmas[1:] > z.sigmas[:-1]).all())
    # Lin et al.: sqrt(alpha_bar) is an affine map of the original one (apart from the clamped last entry)
    orig, new = SD.alphas_cumprod.double().sqrt(), z.alphas_cumprod.double().sqrt()
    slope = (new[0] - new[500]) / (orig[0] - orig[500])
    torch.testing.assert_close(new[:-1], new[0] + slope * (orig[:-1] - orig[0]), atol=1e-6, rtol=0)
    assert float(rescale_zero_terminal_snr(SD.alphas_cumprod.double())[-2]) > 0


# -- schedulers -------------------------------------------------------------------------------------------------------

def test_all_design_schedulers_registered():
    assert set(ALL_SCHEDULERS) <= set(scheduler_names())
    assert set(ALL_SCHEDULERS) <= set(SCHEDULERS)


def test_normal_sd_10_steps():
    s = get_scheduler("normal")(SD, 10)
    assert s.dtype == torch.float32 and len(s) == 11
    assert round(float(s[0]), 4) == 14.6146
    assert round(float(s[-2]), 4) == 0.0292
    assert float(s[-1]) == 0.0
    torch.testing.assert_close(s[:-1], SD.sigma(torch.linspace(999, 0, 10)))


def test_karras_endpoints():
    s = get_scheduler("karras")(SD, 20)
    assert float(s[0]) == pytest.approx(SD.sigma_max, rel=1e-6)
    assert float(s[-2]) == pytest.approx(SD.sigma_min, rel=1e-5)
    assert float(s[-1]) == 0.0
    ramp = torch.linspace(0, 1, 20, dtype=torch.float64)
    expected = (SD.sigma_max ** (1 / 7) + ramp * (SD.sigma_min ** (1 / 7) - SD.sigma_max ** (1 / 7))) ** 7
    torch.testing.assert_close(s[:-1].double(), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ALL_SCHEDULERS)
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 20, 33, 50])
def test_schedules_are_decreasing_and_end_in_zero(name, steps):
    s = get_scheduler(name)(SD, steps)
    assert s.dtype == torch.float32
    assert float(s[-1]) == 0.0
    assert bool((s[1:] < s[:-1]).all()), s
    assert float(s[0]) <= SD.sigma_max * (1 + 1e-5)
    if name == "ddim_uniform":
        assert len(s) >= steps + 1
        if 1000 % steps == 0:
            assert len(s) == steps + 1
    elif name == "beta":
        assert len(s) <= steps + 1 and (steps > 20 or len(s) == steps + 1)
    else:
        assert len(s) == steps + 1


def test_sd_schedule_first_sigmas():
    for name in ("normal", "karras", "exponential", "sgm_uniform", "simple", "beta", "linear_quadratic",
                 "kl_optimal"):
        assert float(get_scheduler(name)(SD, 12)[0]) == pytest.approx(SD.sigma_max, rel=1e-5), name
    for name in ("normal", "karras", "exponential", "kl_optimal"):
        assert float(get_scheduler(name)(SD, 12)[-2]) == pytest.approx(SD.sigma_min, rel=1e-4), name


def test_simple_and_ddim_uniform_pick_table_entries():
    simple = get_scheduler("simple")(SD, 10)
    torch.testing.assert_close(simple[:-1], SD.sigmas[[999, 899, 799, 699, 599, 499, 399, 299, 199, 99]])
    ddim = get_scheduler("ddim_uniform")(SD, 10)
    torch.testing.assert_close(ddim[:-1], SD.sigmas[[901, 801, 701, 601, 501, 401, 301, 201, 101, 1]])


def test_sgm_uniform_drops_the_last_point():
    s = get_scheduler("sgm_uniform")(SD, 4)
    torch.testing.assert_close(s[:-1], SD.sigma(torch.tensor([999.0, 749.25, 499.5, 249.75])))


def test_exponential_and_polyexponential():
    e = exponential_sigmas(5, 0.1, 10.0)
    torch.testing.assert_close(e, torch.tensor([10.0, 10 ** 0.5, 1.0, 10 ** -0.5, 0.1, 0.0]))
    torch.testing.assert_close(polyexponential_sigmas(5, 0.1, 10.0, rho=1.0), e)
    p2 = polyexponential_sigmas(5, 0.1, 10.0, rho=2.0)
    assert float(p2[0]) == pytest.approx(10.0) and float(p2[-2]) == pytest.approx(0.1)
    assert float(p2[2]) < float(e[2])         # rho > 1 spends more steps at low noise
    assert len(karras_sigmas(0, 0.1, 10.0)) == 0


def test_kl_optimal_formula():
    s = get_scheduler("kl_optimal")(SD, 5)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    expected = torch.tan(t * math.atan(SD.sigma_min) + (1 - t) * math.atan(SD.sigma_max))
    torch.testing.assert_close(s[:-1].double(), expected, rtol=1e-6, atol=0)


def test_linear_quadratic_shape():
    steps = 20
    s = linear_quadratic_sigmas(SD, steps)
    u = 1 - s.double() / SD.sigma_max
    # linear part: equal increments of 0.025/10 for the first half
    torch.testing.assert_close(u[:11], torch.arange(11, dtype=torch.float64) * 0.0025, atol=1e-6, rtol=0)
    # quadratic part: constant second difference, C1 at the junction
    second = u[12:-1] - 2 * u[11:-2] + u[10:-3]
    assert float(second.std()) < 1e-5 and float(second.mean()) > 0
    assert float(u[-1]) == 1.0
    torch.testing.assert_close(get_scheduler("linear_quadratic")(SD, 1), torch.tensor([SD.sigma_max, 0.0]))


def test_beta_quantiles():
    for q, expected in ((0.5, 0.5), (0.0, 0.0), (1.0, 1.0)):
        assert beta_ppf(q, 0.6, 0.6) == pytest.approx(expected, abs=1e-12)
    for x in (0.01, 0.2, 0.7, 0.95):
        assert beta_cdf(beta_ppf(x, 0.6, 0.6), 0.6, 0.6) == pytest.approx(x, abs=1e-10)
        assert beta_cdf(x, 1.0, 1.0) == pytest.approx(x, abs=1e-12)         # Beta(1, 1) is uniform
        assert beta_cdf(x, 2.0, 1.0) == pytest.approx(x ** 2, abs=1e-12)
    from scipy import stats  # test extra: an independent reference for the quantiles
    for q in (0.001, 0.1, 0.33, 0.9, 0.999):
        assert beta_ppf(q, 0.6, 0.6) == pytest.approx(float(stats.beta.ppf(q, 0.6, 0.6)), abs=1e-9)
        assert beta_ppf(q, 2.0, 0.5) == pytest.approx(float(stats.beta.ppf(q, 2.0, 0.5)), abs=1e-9)


def test_beta_schedule_uses_table_sigmas():
    s = beta_sigmas(SD, 10)
    assert float(s[0]) == pytest.approx(SD.sigma_max)
    for value in s[:-1]:
        assert bool((SD.sigmas == value).any())


def test_sd_turbo_sigmas():
    torch.testing.assert_close(sd_turbo_sigmas(SD, 4, 1.0)[:-1], SD.sigmas[[999, 899, 799, 699]])
    torch.testing.assert_close(sd_turbo_sigmas(SD, 2, 0.5)[:-1], SD.sigmas[[499, 399]])
    assert len(sd_turbo_sigmas(SD, 20, 1.0)) == 11
    assert float(sd_turbo_sigmas(SD, 1, 1.0)[-1]) == 0.0


def test_denoise_rule():
    normal = get_scheduler("normal")
    full = sigmas_for_denoise(normal, SD, 10, 1.0)
    torch.testing.assert_close(full, normal(SD, 10))
    half = sigmas_for_denoise(normal, SD, 10, 0.5)
    assert len(half) == 11
    torch.testing.assert_close(half, normal(SD, 20)[-11:])
    odd = sigmas_for_denoise(normal, SD, 7, 0.3)          # int(7/0.3) = 23
    torch.testing.assert_close(odd, normal(SD, 23)[-8:])
    assert len(sigmas_for_denoise(normal, SD, 10, 0.0)) == 0
    assert len(sigmas_for_denoise(normal, SD, 10, -1.0)) == 0
