"""CFG++ samplers, ancestral RES multistep and gradient estimation (diffusion/sampling/samplers_cfg_pp.py).

The CFG++ steps are checked against hand-written updates in the form of the CFG++ paper, x' = D + σ'·ε_uncond + the
solver's correction, on a toy guider (two Gaussian denoisers mixed by a CFG scale); without an unconditional
prediction every CFG++ sampler must be bit-identical to its registered plain counterpart.
"""
from __future__ import annotations

import math

import pytest
import torch

from diffusion.sampling.noise import ancestral_generator_seed, default_noise_sampler
from diffusion.sampling.registry import get_sampler, sampler_names
from tests.diffusion.sampling.analytic import gaussian_denoiser, initial_noise
from tests.diffusion.sampling.test_dpmpp_samplers import (MEAN, ODE_SHAPE, STD, assert_statistics, euler,
                                                          final_samples, karras, ode_error)

CFG_PP = {"euler_ancestral_cfg_pp": "euler_ancestral", "dpmpp_2m_cfg_pp": "dpmpp_2m",
          "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral", "res_multistep_cfg_pp": "res_multistep",
          "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
          "gradient_estimation_cfg_pp": "gradient_estimation"}
ALL = list(CFG_PP) + ["res_multistep_ancestral", "gradient_estimation"]
ANCESTRAL = ["euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral",
             "res_multistep_ancestral_cfg_pp"]


class ToyGuider:
    """CFG over two Gaussian data models (cond mean +1, uncond mean −1): returns U + cfg·(C − U) and records U in
    `uncond_denoised` after every call, as the real guider does."""

    def __init__(self, cfg: float = 3.0):
        self.cond, self.uncond = gaussian_denoiser(1.0, STD), gaussian_denoiser(-1.0, STD)
        self.cfg = cfg
        self.uncond_denoised = None
        self.calls = 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        c, u = self.cond(x, sigma), self.uncond(x, sigma)
        self.uncond_denoised = u
        return u + (c - u) * self.cfg

    def predict(self, x, sigma):
        """(D, U) at a scalar sigma, evaluated on a fresh copy (does not disturb the sampler's model)."""
        other = ToyGuider(self.cfg)
        d = other(x, torch.full([x.shape[0]], float(sigma), dtype=x.dtype))
        return d, other.uncond_denoised


class FixedNoise:
    """A noise sampler returning a fixed, pre-drawn tensor per step (in call order)."""

    def __init__(self, like, n):
        gen = torch.Generator().manual_seed(42)
        self.z = [torch.randn(like.shape, generator=gen, dtype=like.dtype) for _ in range(n)]
        self.used = 0

    def __call__(self, sigma, sigma_next):
        z = self.z[self.used]
        self.used += 1
        return z


def phi2(z: float) -> float:
    return (math.exp(z) - 1.0 - z) / (z * z)


def ancestral(sigma: float, sigma_next: float):
    """(σ_down, σ_up) of an η = 1 ancestral step, by hand: σ_up² = σ'²(σ² − σ'²)/σ², σ_down = σ'²/σ."""
    return sigma_next ** 2 / sigma, sigma_next * math.sqrt(1.0 - sigma_next ** 2 / sigma ** 2)


def problem(n=8, shape=(3, 1, 4, 5)):
    sigmas = torch.tensor([8.0, 3.0, 1.2, 0.45][:n], dtype=torch.float64)
    x = initial_noise(shape, float(sigmas[0]), 0.0, STD, seed=7).double()
    return sigmas, x


# ---------------------------------------------------------------------------------------------------------------------
# registry and the plain reduction


def test_registered_in_reference_order():
    names = sampler_names()
    for name in ALL:
        assert callable(get_sampler(name)) and name in names
    assert names.index("res_multistep") < names.index("res_multistep_cfg_pp") < names.index(
        "res_multistep_ancestral") < names.index("gradient_estimation") < names.index("gradient_estimation_cfg_pp")


@pytest.mark.parametrize("name", list(CFG_PP))
def test_without_uncond_is_exactly_the_plain_sampler(name):
    sigmas = karras(9)
    x_T = initial_noise((2, 1, 6, 7), float(sigmas[0]), MEAN, STD, seed=4)
    model, plain_model = gaussian_denoiser(MEAN, STD), gaussian_denoiser(MEAN, STD)
    out = get_sampler(name)(model, x_T, sigmas, extra_args={"seed": 9})
    ref = get_sampler(CFG_PP[name])(plain_model, x_T, sigmas, extra_args={"seed": 9})
    assert torch.equal(out, ref)
    assert model.calls == plain_model.calls


def test_plain_variants_ignore_the_uncond_prediction():
    """res_multistep_ancestral and gradient_estimation are not CFG++: with a guider they follow D alone."""
    sigmas, x = problem()

    class GuidedOnly:
        """The toy guider's D without the uncond attribute."""
        uncond_denoised = None

        def __init__(self):
            self.inner = ToyGuider()

        def __call__(self, x, sigma, **kwargs):
            return self.inner(x, sigma)

    for name in ("res_multistep_ancestral", "gradient_estimation"):
        noise = FixedNoise(x, 4)
        a = get_sampler(name)(ToyGuider(), x, sigmas, noise_sampler=noise)
        b = get_sampler(name)(GuidedOnly(), x, sigmas, noise_sampler=FixedNoise(x, 4))
        assert torch.equal(a, b), name
        c = get_sampler(name + "_cfg_pp")(ToyGuider(), x, sigmas, noise_sampler=FixedNoise(x, 4))
        assert (a - c).abs().max() > 1e-3, name


# ---------------------------------------------------------------------------------------------------------------------
# hand-written CFG++ updates on the toy guider


def test_euler_ancestral_cfg_pp_step():
    sigmas, x = problem(2)
    s0, s1 = float(sigmas[0]), float(sigmas[1])
    noise = FixedNoise(x, 1)
    got = get_sampler("euler_ancestral_cfg_pp")(ToyGuider(), x, sigmas, noise_sampler=noise)
    d, u = ToyGuider().predict(x, s0)
    down, up = ancestral(s0, s1)
    assert torch.allclose(got, d + down * (x - u) / s0 + up * noise.z[0], atol=1e-12)


def test_euler_ancestral_cfg_pp_eta_zero_is_euler_cfg_pp():
    sigmas, x = problem()
    a = get_sampler("euler_ancestral_cfg_pp")(ToyGuider(), x, sigmas, eta=0.0)
    b = get_sampler("euler_cfg_pp")(ToyGuider(), x, sigmas)
    assert torch.allclose(a, b, atol=1e-12)


def test_dpmpp_2m_cfg_pp_two_steps():
    sigmas, x0 = problem(3)
    s0, s1, s2 = (float(s) for s in sigmas)
    got = get_sampler("dpmpp_2m_cfg_pp")(ToyGuider(), x0, sigmas)
    d0, u0 = ToyGuider().predict(x0, s0)
    x1 = d0 + (s1 / s0) * (x0 - u0)                          # first step: CFG++ DDIM
    d1, u1 = ToyGuider().predict(x1, s1)
    r = math.log(s0 / s1) / math.log(s1 / s2)
    x2 = d1 + (s2 / s1) * (x1 - u1) + (1 - s2 / s1) * (u1 - u0) / (2 * r)
    assert torch.allclose(got, x2, atol=1e-12)


def test_dpmpp_2s_ancestral_cfg_pp_step():
    sigmas, x = problem(2)
    s0, s1 = float(sigmas[0]), float(sigmas[1])
    noise = FixedNoise(x, 1)
    model = ToyGuider()
    got = get_sampler("dpmpp_2s_ancestral_cfg_pp")(model, x, sigmas, noise_sampler=noise)
    assert model.calls == 2
    down, up = ancestral(s0, s1)
    mid = math.sqrt(s0 * down)
    d, u = ToyGuider().predict(x, s0)
    x_mid = d + (mid / s0) * (x - u)
    d_mid, u_mid = ToyGuider().predict(x_mid, mid)
    assert torch.allclose(got, d_mid + (down / s0) * (x - u_mid) + up * noise.z[0], atol=1e-12)


def test_res_multistep_cfg_pp_two_steps():
    sigmas, x0 = problem(3)
    s0, s1, s2 = (float(s) for s in sigmas)
    got = get_sampler("res_multistep_cfg_pp")(ToyGuider(), x0, sigmas)
    d0, u0 = ToyGuider().predict(x0, s0)
    x1 = d0 + (s1 / s0) * (x0 - u0)
    d1, u1 = ToyGuider().predict(x1, s1)
    h0, h1 = math.log(s0 / s1), math.log(s1 / s2)
    x2 = d1 + (s2 / s1) * (x1 - u1) + h1 ** 2 * phi2(-h1) / h0 * (u1 - u0)
    assert torch.allclose(got, x2, atol=1e-12)


def test_res_multistep_ancestral_cfg_pp_two_steps():
    sigmas, x0 = problem(3)
    s0, s1, s2 = (float(s) for s in sigmas)
    noise = FixedNoise(x0, 2)
    got = get_sampler("res_multistep_ancestral_cfg_pp")(ToyGuider(), x0, sigmas, noise_sampler=noise)
    down0, up0 = ancestral(s0, s1)
    down1, up1 = ancestral(s1, s2)
    d0, u0 = ToyGuider().predict(x0, s0)
    x1 = d0 + (down0 / s0) * (x0 - u0) + up0 * noise.z[0]
    d1, u1 = ToyGuider().predict(x1, s1)
    h0, h1 = math.log(s0 / down0), math.log(s1 / down1)        # λ-lengths of the deterministic parts
    x2 = d1 + (down1 / s1) * (x1 - u1) + h1 ** 2 * phi2(-h1) / h0 * (u1 - u0) + up1 * noise.z[1]
    assert torch.allclose(got, x2, atol=1e-12)


def test_gradient_estimation_cfg_pp_two_steps():
    sigmas, x0 = problem(3)
    s0, s1, s2 = (float(s) for s in sigmas)
    got = get_sampler("gradient_estimation_cfg_pp")(ToyGuider(), x0, sigmas)
    d0, u0 = ToyGuider().predict(x0, s0)
    e0 = (x0 - u0) / s0
    x1 = d0 + s1 * e0
    d1, u1 = ToyGuider().predict(x1, s1)
    e1 = (x1 - u1) / s1
    x2 = d1 + s2 * e1 + (s2 - s1) * (2.0 - 1.0) * (e1 - e0)     # γ = 2: direction 2ε_1 − ε_0
    assert torch.allclose(got, x2, atol=1e-12)


@pytest.mark.parametrize("name", ["dpmpp_2m_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_cfg_pp",
                                  "res_multistep_ancestral_cfg_pp", "euler_ancestral_cfg_pp"])
def test_final_step_returns_the_guided_prediction(name):
    sigmas, x = problem()
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    seen = []
    out = get_sampler(name)(ToyGuider(), x, sigmas, extra_args={"seed": 1}, callback=seen.append)
    assert [info["i"] for info in seen] == list(range(len(sigmas) - 1))
    tol = 1e-12 if name != "euler_ancestral_cfg_pp" else 1e-9    # Euler reaches D through x − σ·ε
    assert torch.allclose(out, seen[-1]["denoised"], atol=tol)


# ---------------------------------------------------------------------------------------------------------------------
# ancestral RES


def test_res_multistep_ancestral_eta_zero_is_res_multistep():
    sigmas = karras(10)
    x_T = initial_noise((2, 1, 8, 8), float(sigmas[0]), MEAN, STD)
    a = get_sampler("res_multistep_ancestral")(gaussian_denoiser(MEAN, STD), x_T, sigmas, eta=0.0)
    b = get_sampler("res_multistep")(gaussian_denoiser(MEAN, STD), x_T, sigmas)
    assert torch.equal(a, b)


def test_res_multistep_ancestral_is_the_second_order_reverse_sde_integrator():
    """With η = 1 the ancestral split equals the η = 1 SDE step (σ_down/σ = e^{−2h}, σ_up = σ'·sqrt(1 − e^{−2h})),
    and the correction over the previous deterministic step length equals the exact phi-integral of dpmpp_2m_sde
    (solver_type "heun"): given the same noise both give the same samples."""
    sigmas = karras(12, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    a = get_sampler("res_multistep_ancestral")(gaussian_denoiser(MEAN, STD), x_T, sigmas,
                                               noise_sampler=FixedNoise(x_T, 12))
    b = get_sampler("dpmpp_2m_sde")(gaussian_denoiser(MEAN, STD), x_T, sigmas, noise_sampler=FixedNoise(x_T, 12),
                                    solver_type="heun")
    assert torch.allclose(a, b, atol=1e-12)


def test_res_multistep_ancestral_statistics():
    assert_statistics(final_samples(get_sampler("res_multistep_ancestral"), 30))


@pytest.mark.parametrize("name", ANCESTRAL)
def test_default_noise_is_the_seeded_ancestral_stream(name):
    sigmas = karras(6)
    x_T = initial_noise((2, 1, 8, 8), float(sigmas[0]), MEAN, STD, seed=3)
    fn = get_sampler(name)
    a = fn(ToyGuider(), x_T, sigmas, extra_args={"seed": 11})
    b = fn(ToyGuider(), x_T, sigmas, extra_args={"seed": 11},
           noise_sampler=default_noise_sampler(x_T, ancestral_generator_seed(11, x_T.device)))
    c = fn(ToyGuider(), x_T, sigmas, extra_args={"seed": 12})
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# gradient estimation


def test_gradient_estimation_gamma_one_is_euler():
    sigmas = karras(10, dtype=torch.float64)
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    a = get_sampler("gradient_estimation")(gaussian_denoiser(MEAN, STD), x_T, sigmas, ge_gamma=1.0)
    assert torch.allclose(a, euler(gaussian_denoiser(MEAN, STD), x_T, sigmas), atol=1e-12)


def test_gradient_estimation_beats_euler_and_converges():
    fn = get_sampler("gradient_estimation")
    errors = []
    for steps in (5, 10, 20, 40, 80):
        err, calls = ode_error(fn, steps)
        err_euler, _ = ode_error(euler, steps)
        assert calls == steps
        assert err < err_euler, (steps, err, err_euler)
        errors.append(err)
    assert errors[0] < 0.25 * ode_error(euler, 5)[0]           # the few-step regime the method is made for
    assert errors[-1] < 0.01 and errors[-2] / errors[-1] > 1.6   # first order as the steps grow


@pytest.mark.parametrize("name", ALL)
def test_model_calls_and_partial_schedule(name):
    """One call per step (two for 2S), one callback per step, and a schedule stopping above σ = 0 works."""
    sigmas = karras(20)[:13]
    x_T = initial_noise((2, 1, 8, 8), float(sigmas[0]), MEAN, STD)
    model, seen = ToyGuider(cfg=1.5), []
    out = get_sampler(name)(model, x_T, sigmas, extra_args={"seed": 2}, callback=seen.append)
    assert model.calls == (24 if name == "dpmpp_2s_ancestral_cfg_pp" else 12)
    assert [info["i"] for info in seen] == list(range(12))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert out.shape == x_T.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["dpmpp_2m_cfg_pp", "res_multistep_cfg_pp"])
def test_repeated_sigma_is_a_no_op_step(name):
    sigmas = karras(12, dtype=torch.float64)
    repeated = torch.cat([sigmas[:5], sigmas[4:]])
    x_T = initial_noise(ODE_SHAPE, float(sigmas[0]), MEAN, STD).double()
    assert torch.allclose(get_sampler(name)(ToyGuider(), x_T, repeated),
                          get_sampler(name)(ToyGuider(), x_T, sigmas), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# with the real guider


def _guider(cfg):
    from diffusion.sampling.guidance import Guidance, prepare_conditioning
    from tests.diffusion.sampling.test_guidance import ContextEcho, cond
    model, shape = ContextEcho(), (1, 4, 8, 8)
    return Guidance(model, prepare_conditioning([cond(1)], shape, model),
                    prepare_conditioning([cond(3)], shape, model), cfg=cfg)


def test_real_guider_cfg_one_is_plain_and_cfg_pp_uses_its_uncond():
    sigmas = torch.tensor([6.0, 2.5, 0.0])
    x = initial_noise((1, 4, 8, 8), 6.0, 0.0, 1.0, seed=5)
    # cfg = 1: the guider skips the negative, reports no uncond, and CFG++ is the plain sampler
    for name in ("dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "gradient_estimation_cfg_pp"):
        assert torch.equal(get_sampler(name)(_guider(1.0), x, sigmas), get_sampler(CFG_PP[name])(_guider(1.0), x,
                                                                                                 sigmas))
    # cfg = 4: one CFG++ step is D + σ'·(x − U)/σ with the guider's own D and U
    probe = _guider(4.0)
    d = probe(x, torch.tensor([6.0]))
    u = probe.uncond_denoised
    assert u is not None and (d - u).abs().max() > 1e-3
    got = get_sampler("dpmpp_2m_cfg_pp")(_guider(4.0), x, sigmas[:2])
    assert torch.allclose(got, d + 2.5 * (x - u) / 6.0, atol=1e-5)
