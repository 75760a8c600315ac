"""Rectified-flow model sampling (SD3 / AuraFlow / Flux) against closed forms, and its nodes on a real MODEL."""
import math
import os
import uuid

import pytest
import torch

from diffusion.sampling.ksampler import calculate_sigmas
from diffusion.sampling.model_sampling_flow import (FlowModelSampling, exponential_shift, flux_shift_for_size,
                                                    snr_shift)
from diffusion.sampling.samplers_basic import sample_euler
from tests.conftest import patched_ksampler_prompt


def test_snr_shift_and_the_sd3_table():
    assert float(snr_shift(3.0, 0.5)) == pytest.approx(0.75)  # 1.5 / 2
    assert float(snr_shift(1.0, 0.3)) == pytest.approx(0.3)
    sampling = FlowModelSampling(shift=3.0, multiplier=1000)
    assert sampling.sigmas.shape == (1000,)
    assert sampling.sigma_max == pytest.approx(1.0)
    assert sampling.sigma_min == pytest.approx(3 * 0.001 / (1 + 2 * 0.001))
    assert float(sampling.timestep(0.25)) == pytest.approx(250.0)
    assert float(sampling.sigma(500.0)) == pytest.approx(0.75)
    assert sampling.percent_to_sigma(0.0) == 1.0 and sampling.percent_to_sigma(1.0) == 0.0
    assert sampling.percent_to_sigma(0.5) == pytest.approx(0.75)


def test_flux_shift_follows_the_image_size():
    assert flux_shift_for_size(1024, 1024) == pytest.approx(1.15)
    assert flux_shift_for_size(256, 256) == pytest.approx(0.5)
    assert flux_shift_for_size(512, 512) == pytest.approx(0.5 + 0.65 * (1024 - 256) / 3840)
    mu = 1.15
    assert float(exponential_shift(mu, 0.5)) == pytest.approx(math.exp(mu) / (math.exp(mu) + 1))
    sampling = FlowModelSampling(shift=mu, multiplier=1.0, kind="exponential", timesteps=10000)
    assert sampling.sigmas.shape == (10000,) and sampling.sigma_max == pytest.approx(1.0)
    assert float(sampling.timestep(0.4)) == pytest.approx(0.4)  # Flux's network takes sigma itself
    with pytest.raises(ValueError, match="flow shift"):
        FlowModelSampling(kind="cosine")


def test_the_line_from_latent_to_noise_and_the_velocity_denoiser_invert_each_other():
    sampling = FlowModelSampling(shift=3.0)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 4, 3, 3, generator=gen)
    sigma = torch.tensor([0.8, 0.3])
    x = sampling.noise_scaling(sigma, noise, x0)
    assert torch.allclose(x[0], 0.8 * noise[0] + 0.2 * x0[0])
    assert torch.equal(sampling.calculate_input(sigma, x), x)
    velocity = noise - x0
    assert torch.allclose(sampling.calculate_denoised(sigma, velocity, x), x0, atol=1e-6)
    assert torch.allclose(sampling.inverse_noise_scaling(torch.tensor(0.5), x0), 2 * x0)


def test_euler_with_the_exact_velocity_walks_the_straight_line_to_the_data():
    """For one data point the flow is a straight line: Euler's steps land on it exactly at every sigma."""
    sampling = FlowModelSampling(shift=3.0)
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(1, 4, 2, 2, generator=gen), torch.randn(1, 4, 2, 2, generator=gen)
    sigmas = torch.cat([sampling.sigmas.flip(0)[::250], torch.zeros(1)])
    visited = []

    def denoiser(x, sigma, **_):
        velocity = (x - x0) / sigma.reshape(-1, 1, 1, 1)  # what a perfect network predicts on the line
        return sampling.calculate_denoised(sigma, velocity, x)

    x = sampling.noise_scaling(sigmas[0], noise, torch.zeros_like(x0))
    out = sample_euler(denoiser, x, sigmas, callback=lambda info: visited.append(info["x"].clone()))
    assert torch.allclose(out, x0, atol=1e-5)
    for step, seen in zip(range(len(sigmas) - 1), visited):
        s = float(sigmas[step])
        assert torch.allclose(seen, s * noise + (1 - s) * x0, atol=1e-5)


@pytest.fixture
def model_engine(tmp_path, tiny_models):
    from model_management.services import Services
    from nodes import builtin_catalogue
    from execution.scheduler import Executor
    services = Services.for_directory(str(tmp_path))
    os.symlink(tiny_models.checkpoint("sd1"),
               os.path.join(services.paths.folder_paths("checkpoints")[0], "sd1.safetensors"))
    return services, builtin_catalogue(), Executor(builtin_catalogue(), services=services)


def test_the_nodes_patch_a_clone_and_the_schedulers_read_the_flow_table(model_engine):
    from model_management.checkpoints import load_checkpoint
    from nodes.model_patches import ModelSamplingAuraFlow, ModelSamplingFlux, ModelSamplingSD3
    services, _, _ = model_engine
    model = load_checkpoint(os.path.join(services.paths.folder_paths("checkpoints")[0], "sd1.safetensors"),
                            want_clip=False, want_vae=False).model
    sd3 = ModelSamplingSD3().run(None, model, 3.0)[0]
    assert type(model.model_sampling).__name__ == "DiscreteModelSampling"  # the input MODEL is untouched
    # simple: table entries 1000, 750, 500, 250 (1-based) -> shift 3 of 1.0, 0.75, 0.5, 0.25
    assert torch.allclose(calculate_sigmas(sd3, "simple", 4), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]), atol=1e-6)
    aura = ModelSamplingAuraFlow().run(None, model, 1.73)[0]
    assert float(aura.model_sampling.timestep(0.5)) == pytest.approx(0.5)
    flux = ModelSamplingFlux().run(None, model, 1.15, 0.5, 1024, 1024)[0]
    assert flux.model_sampling.shift == pytest.approx(1.15) and flux.model_sampling.kind == "exponential"


def test_ksampler_runs_a_model_sampled_as_a_flow_through_the_scheduler(model_engine):
    from execution.events import RecordingSink
    from execution.scheduler import Job
    from graph.validation import validate_prompt
    services, catalogue, executor = model_engine
    prompt = patched_ksampler_prompt("ModelSamplingSD3", {"shift": 3.0}, scheduler="simple", cfg=2.0, seed=3)
    checked = validate_prompt(prompt, catalogue, None, services)
    assert checked.ok, (checked.error, checked.node_errors)
    sink = RecordingSink()
    outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order), sink)
    assert outcome.status == "success", sink.of("execution_error")
    progress = [e for e in sink.of("progress") if e.get("node") == "sample"]
    assert progress and progress[-1]["value"] == 3
