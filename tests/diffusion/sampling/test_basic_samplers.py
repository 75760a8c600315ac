"""The basic samplers on the analytic Gaussian problem (see analytic.py), plus interface conventions."""
import math

import pytest
import torch

from diffusion.sampling import SAMPLERS, get_sampler, sampler_names
from diffusion.sampling.model_sampling import DiscreteModelSampling
from diffusion.sampling.noise import default_noise_sampler
from diffusion.sampling.samplers_basic import get_ancestral_step, lms_coefficient
from diffusion.sampling.schedulers import karras_sigmas
from tests.diffusion.sampling.analytic import exact_ode_solution, gaussian_denoiser, initial_noise

SD = DiscreteModelSampling()
MEAN, STD = 0.3, 0.8
N = 20000
BASIC = ["euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
         "dpm_adaptive", "ddpm", "lcm", "ddim", "euler_cfg_pp"]
DETERMINISTIC = ["euler", "ddim", "euler_cfg_pp", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpm_adaptive"]


def schedule(steps):
    return karras_sigmas(steps, SD.sigma_min, SD.sigma_max)


def run(name, steps, seed=0, model=None, **options):
    sigmas = schedule(steps)
    x = initial_noise([N, 1, 1, 1], float(sigmas[0]), MEAN, STD, seed=seed)
    model = model if model is not None else gaussian_denoiser(MEAN, STD)
    out = get_sampler(name)(model, x, sigmas, extra_args={"seed": seed + 100}, **options)
    return x, sigmas, model, out


def ode_at(x_T, sigma_T, sigma):
    """Exact probability-flow ODE solution at an intermediate sigma."""
    return MEAN + (x_T - MEAN) * math.sqrt(STD ** 2 + sigma ** 2) / math.sqrt(STD ** 2 + sigma_T ** 2)


def end_sigma(name, sigmas):
    """dpm_fast / dpm_adaptive stop at the last positive sigma (eps-form DPM-Solver cannot reach 0)."""
    return float(sigmas[-2]) if name in ("dpm_fast", "dpm_adaptive") else 0.0


def test_registered():
    assert set(BASIC) <= set(sampler_names())
    assert get_sampler("euler") is SAMPLERS["euler"]
    with pytest.raises(ValueError):
        get_sampler("no_such_sampler")


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_samplers_follow_the_ode(name):
    steps = {"euler": 100, "ddim": 100, "euler_cfg_pp": 100, "lms": 60}.get(name, 30)
    x, sigmas, model, out = run(name, steps)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(out.std()) == pytest.approx(STD, rel=0.05)
    exact = ode_at(x, float(sigmas[0]), end_sigma(name, sigmas))
    # heunpp2's published weights keep most of the Euler slope early on: first-order-like accuracy
    tol = {"euler": 0.07, "ddim": 0.07, "euler_cfg_pp": 0.07, "dpm_adaptive": 0.08, "heunpp2": 0.25}.get(name, 0.02)
    assert float((out - exact).abs().max()) < tol
    assert float((out - exact).abs().mean()) < tol / 4


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "ddpm"])
def test_ancestral_samplers_reach_the_data_distribution(name):
    _, _, _, out = run(name, 150)
    assert float(out.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(out.std()) == pytest.approx(STD, rel=0.05)


def _linear_variance(sigmas, step_coefficient):
    """Output variance of a sampler that is linear on the Gaussian problem: each step maps x - mean by c and adds
    independent noise of std u, where (c, u) = step_coefficient(sigma, sigma_next, a) and a = std²/(std² + σ²) is
    the denoiser's gain."""
    var = STD ** 2 + float(sigmas[0]) ** 2
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        c, u = step_coefficient(sigma, sigma_next, STD ** 2 / (STD ** 2 + sigma ** 2))
        var = c ** 2 * var + u ** 2
    return var


def test_euler_ancestral_matches_the_predicted_variance_at_few_steps():
    """With 20 steps the ancestral sampler is biased (the denoiser is a mean, not a sample); the bias is exactly
    computable for the Gaussian problem, so compare with that prediction."""
    def coefficient(sigma, sigma_next, a):
        down, up = get_ancestral_step(sigma, sigma_next)
        return 1 + (1 - a) * (down - sigma) / sigma, up
    _, sigmas, _, out = run("euler_ancestral", 20)
    assert float(out.std()) == pytest.approx(math.sqrt(_linear_variance(sigmas, coefficient)), rel=0.02)
    _, _, _, ddpm = run("ddpm", 20)
    _, _, _, ancestral = run("euler_ancestral", 20)
    torch.testing.assert_close(ddpm, ancestral, atol=2e-4, rtol=1e-4)    # eta = 1 is the DDPM posterior


def test_lcm_with_the_mean_denoiser_matches_its_prediction():
    _, sigmas, _, out = run("lcm", 8)
    var = _linear_variance(sigmas, lambda s, s_next, a: (a, s_next))
    assert float(out.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(out.std()) == pytest.approx(math.sqrt(var), rel=0.03)


class PosteriorSampler:
    """A consistency-style model: returns a sample of p(x0 | x) (for which LCM sampling is exact)."""

    def __init__(self):
        self.gen = torch.Generator().manual_seed(1234)
        self.calls = 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        var = STD ** 2 * s ** 2 / (STD ** 2 + s ** 2)
        mean = (STD ** 2 * x + s ** 2 * MEAN) / (STD ** 2 + s ** 2)
        return mean + var.sqrt() * torch.randn(x.shape, generator=self.gen)


def test_lcm_with_a_posterior_sampling_model_reaches_the_data():
    _, _, model, out = run("lcm", 4, model=PosteriorSampler())
    assert model.calls == 4
    assert float(out.mean()) == pytest.approx(MEAN, abs=0.02)
    assert float(out.std()) == pytest.approx(STD, rel=0.05)


def _error_at_budget(name, calls_budget):
    per_step = {"heun": 2, "dpm_2": 2, "heunpp2": 3}.get(name, 1)
    steps = calls_budget // per_step
    x, sigmas, model, out = run(name, steps)
    assert model.calls <= calls_budget
    return float((out - exact_ode_solution(x, float(sigmas[0]), MEAN, STD)).abs().mean())


@pytest.mark.parametrize("name", ["heun", "dpm_2", "lms", "dpm_fast"])
def test_higher_order_samplers_beat_euler_at_equal_model_calls(name):
    for budget, factor in ((24, 0.7), (48, 0.3)):
        euler = _error_at_budget("euler", budget)
        assert _error_at_budget(name, budget) < factor * euler, (name, budget)


def test_orders_of_convergence():
    """Halving the step doubles accuracy for euler and quadruples it for heun."""
    def err(name, steps):
        x, sigmas, _, out = run(name, steps)
        return float((out - exact_ode_solution(x, float(sigmas[0]), MEAN, STD)).abs().mean())
    assert 1.6 < err("euler", 20) / err("euler", 40) < 2.6
    assert err("heun", 10) / err("heun", 20) > 3.0


def _heunpp2_by_hand(x, sigmas, denoise):
    """The published Heun++ rule on plain floats: slopes d1 at sigma_i, d2 after an Euler hop to sigma_{i+1},
    d3 after a further hop to sigma_{i+2}; weights sigma_{i+1}/(k sigma_0), sigma_{i+2}/(k sigma_0) for k slopes,
    the first slope taking the rest; Euler onto the last sigma."""
    s = [float(v) for v in sigmas]
    slope = lambda x, sig: (x - denoise(x, sig)) / sig
    for i in range(len(s) - 1):
        dt = s[i + 1] - s[i]
        d1 = slope(x, s[i])
        if s[i + 1] == s[-1]:
            x = x + d1 * dt
        elif s[i + 2] == s[-1]:
            x2 = x + d1 * dt
            w2 = s[i + 1] / (2 * s[0])
            x = x + ((1 - w2) * d1 + w2 * slope(x2, s[i + 1])) * dt
        else:
            x2 = x + d1 * dt
            d2 = slope(x2, s[i + 1])
            x3 = x2 + d2 * (s[i + 2] - s[i + 1])
            w2, w3 = s[i + 1] / (3 * s[0]), s[i + 2] / (3 * s[0])
            x = x + ((1 - w2 - w3) * d1 + w2 * d2 + w3 * slope(x3, s[i + 2])) * dt
    return x


@pytest.mark.parametrize("steps", [1, 2, 3, 8])
def test_heunpp2_is_the_published_heun_plus_plus_rule(steps):
    sigmas = schedule(steps).double()
    denoise = lambda x, sig: MEAN + (x - MEAN) * STD ** 2 / (STD ** 2 + sig ** 2)  # the Gaussian's exact x0
    model = lambda x, sigma, **kw: denoise(x, sigma.reshape(-1, 1, 1, 1))
    x = torch.tensor([-2.0, 0.1, 1.7], dtype=torch.float64).view(3, 1, 1, 1)
    out = get_sampler("heunpp2")(model, x, sigmas)
    want = [_heunpp2_by_hand(float(v), sigmas, denoise) for v in x.flatten()]
    assert out.flatten().tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_model_calls_per_sampler():
    counts = {}
    for name in ["euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
                 "ddpm", "lcm", "ddim", "euler_cfg_pp"]:
        _, _, model, _ = run(name, 10)
        counts[name] = model.calls
    assert counts == {"euler": 10, "euler_ancestral": 10, "heun": 19, "heunpp2": 27, "dpm_2": 19,
                      "dpm_2_ancestral": 19, "lms": 10, "dpm_fast": 10, "ddpm": 10, "lcm": 10, "ddim": 10,
                      "euler_cfg_pp": 10}


def test_dpm_fast_orders_use_exact_budget():
    for steps in (1, 2, 3, 4, 5, 6, 7, 11):
        _, _, model, _ = run("dpm_fast", steps)
        assert model.calls == steps


def test_dpm_adaptive_tolerance_controls_accuracy():
    x, sigmas, loose_model, loose = run("dpm_adaptive", 10, rtol=0.2, atol=0.05)
    _, _, tight_model, tight = run("dpm_adaptive", 10, rtol=0.005, atol=0.001)
    exact = ode_at(x, float(sigmas[0]), float(sigmas[-2]))
    assert tight_model.calls > loose_model.calls
    assert float((tight - exact).abs().mean()) < float((loose - exact).abs().mean())
    assert float((tight - exact).abs().max()) < 0.01


def test_ddim_is_euler():
    _, _, _, euler = run("euler", 12)
    _, _, _, ddim = run("ddim", 12)
    assert torch.equal(euler, ddim)


class CFGModel:
    """A toy CFG wrapper: two Gaussian denoisers (cond and uncond data means) combined with scale `cfg`; records
    the unconditional prediction in `uncond_denoised` as a guider does."""

    def __init__(self, cfg, mean_cond=1.0, mean_uncond=-1.0):
        self.cond, self.uncond = gaussian_denoiser(mean_cond, STD), gaussian_denoiser(mean_uncond, STD)
        self.cfg = cfg
        self.uncond_denoised = None

    def __call__(self, x, sigma, **kwargs):
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        self.uncond_denoised = u
        return u + (c - u) * self.cfg


def test_euler_cfg_pp():
    sigmas = schedule(10)
    x = initial_noise([64, 1, 1, 1], float(sigmas[0]), 0.0, STD, seed=3)
    # without CFG information it is exactly euler
    torch.testing.assert_close(get_sampler("euler_cfg_pp")(gaussian_denoiser(MEAN, STD), x, sigmas),
                               get_sampler("euler")(gaussian_denoiser(MEAN, STD), x, sigmas))
    # a full run with a guider-style model reports every step
    model = CFGModel(cfg=1.0)
    seen = []
    out = get_sampler("euler_cfg_pp")(model, x, sigmas, callback=seen.append)
    assert len(seen) == 10
    # one manual step
    first = CFGModel(cfg=2.0)
    denoised = first(x, sigmas[0] * torch.ones(64))
    expected = denoised + (x - first.uncond_denoised) / sigmas[0] * sigmas[1]
    got = get_sampler("euler_cfg_pp")(CFGModel(cfg=2.0), x, sigmas[:2])
    torch.testing.assert_close(got, expected)
    assert torch.isfinite(out).all()


def test_lms_coefficients_integrate_polynomials_exactly():
    import numpy as np
    t = np.array([10.0, 6.0, 3.5, 1.2, 0.4])
    # order-4 coefficients at step i = 3 integrate any cubic through the nodes exactly
    f = lambda s: 1 + 2 * s - 0.3 * s ** 2 + 0.05 * s ** 3
    coeffs = [lms_coefficient(4, t, 3, j) for j in range(4)]
    approx = sum(c * f(t[3 - j]) for j, c in enumerate(coeffs))
    exact_int = lambda s: s + s ** 2 - 0.1 * s ** 3 + 0.0125 * s ** 4
    assert approx == pytest.approx(exact_int(t[4]) - exact_int(t[3]), rel=1e-12)
    assert lms_coefficient(1, t, 0, 0) == pytest.approx(t[1] - t[0])


def test_ancestral_step_split():
    down, up = get_ancestral_step(2.0, 1.0)
    assert down ** 2 + up ** 2 == pytest.approx(1.0)
    assert up ** 2 == pytest.approx(1.0 * (4 - 1) / 4)
    assert get_ancestral_step(2.0, 1.0, eta=0.0) == (1.0, 0.0)
    assert get_ancestral_step(2.0, 0.0) == (0.0, 0.0)


@pytest.mark.parametrize("name", BASIC)
def test_interface_conventions(name):
    """[B,C,H,W] latents, sigma as a [B] tensor, extra_args passed through, one callback per step, final sigma 0
    handled (no model call at sigma 0, finite output), and a schedule that stops above 0 also works."""
    B = 2
    inner = gaussian_denoiser(MEAN, STD)
    seen_kwargs = []

    def model(x, sigma, **kwargs):
        assert x.shape == (B, 4, 8, 8)
        assert sigma.shape == (B,)
        assert float(sigma.min()) > 0
        seen_kwargs.append(kwargs)
        return inner(x, sigma)
    model.uncond_denoised = None
    sigmas = schedule(6)
    x = initial_noise([B, 4, 8, 8], float(sigmas[0]), MEAN, STD, seed=5)
    steps = []
    out = get_sampler(name)(model, x, sigmas, extra_args={"cond": "c", "seed": 1}, callback=steps.append,
                            disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert all(k == {"cond": "c", "seed": 1} for k in seen_kwargs)
    assert steps and set(steps[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    if name not in ("dpm_adaptive", "dpm_fast"):
        assert [s["i"] for s in steps] == list(range(6))
    partial = get_sampler(name)(model, x, sigmas[:4], extra_args={"seed": 1})
    assert torch.isfinite(partial).all()


@pytest.mark.parametrize("name", ["euler", "heun", "heunpp2", "dpm_2", "lms"])
def test_schedule_ending_above_zero_lands_on_that_sigma(name):
    x, sigmas, _, _ = run(name, 1)
    full = schedule(40)
    part = full[:30]
    out = get_sampler(name)(gaussian_denoiser(MEAN, STD), x, part)
    exact = ode_at(x, float(part[0]), float(part[-1]))
    assert float((out - exact).abs().mean()) < 0.05


@pytest.mark.parametrize("name", ["euler_ancestral", "dpm_2_ancestral", "ddpm", "lcm"])
def test_stochastic_samplers_are_seeded(name):
    sigmas = schedule(8)
    x = initial_noise([4, 4, 8, 8], float(sigmas[0]), MEAN, STD, seed=2)
    sample = lambda seed: get_sampler(name)(gaussian_denoiser(MEAN, STD), x, sigmas, extra_args={"seed": seed})
    a, b, c = sample(5), sample(5), sample(6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the default stream is the CPU generator seeded with seed + 1
    explicit = get_sampler(name)(gaussian_denoiser(MEAN, STD), x, sigmas,
                                 noise_sampler=default_noise_sampler(x, seed=6))
    assert torch.equal(a, explicit)


def test_euler_churn_adds_noise_but_defaults_deterministic():
    sigmas = schedule(10)
    x = initial_noise([8, 1, 1, 1], float(sigmas[0]), MEAN, STD, seed=2)
    plain = get_sampler("heun")(gaussian_denoiser(MEAN, STD), x, sigmas)
    churned = get_sampler("heun")(gaussian_denoiser(MEAN, STD), x, sigmas, extra_args={"seed": 1}, s_churn=5.0)
    assert not torch.allclose(plain, churned)
    assert torch.equal(plain, get_sampler("heun")(gaussian_denoiser(MEAN, STD), x, sigmas))


def test_the_tables_offer_the_reference_names_in_its_order():
    from diffusion.sampling.registry import SCHEDULERS, scheduler_names
    from tests.reference import load_reference

    required = load_reference()["KSampler"]["input"]["required"]
    assert sampler_names() == list(required["sampler_name"][0])
    assert scheduler_names() == list(required["scheduler"][0])
    with pytest.raises(TypeError):
        SAMPLERS["mine"] = lambda *a: None  # read-only: nothing fills them as a side effect
    with pytest.raises(TypeError):
        SCHEDULERS["mine"] = lambda *a: None
