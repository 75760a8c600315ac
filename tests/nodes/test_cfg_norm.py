"""CFGNorm: the post-CFG norm limit against a closed form, and through KSampler on a tiny model."""
import os

import pytest
import torch

from diffusion.sampling.guidance import cfg_norm
from tests.conftest import patched_ksampler_prompt
from tests.nodes.test_model_nodes import ModelEngine


def test_the_guided_prediction_is_limited_to_the_conditional_norm_per_pixel():
    cond = torch.zeros(1, 2, 1, 2)
    cond[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # norm 5
    cond[0, :, 0, 1] = torch.tensor([0.6, 0.8])  # norm 1
    guided = torch.zeros(1, 2, 1, 2)
    guided[0, :, 0, 0] = torch.tensor([6.0, 8.0])  # norm 10: halved
    guided[0, :, 0, 1] = torch.tensor([0.3, 0.4])  # norm 0.5: below the limit, kept
    out = cfg_norm(1.0)({"cond_denoised": cond, "denoised": guided})
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([3.0, 4.0]))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([0.3, 0.4]))
    assert torch.allclose(cfg_norm(2.0)({"cond_denoised": cond, "denoised": guided}), out * 2)


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(eng.models("checkpoints"), "sd1.safetensors"))
    return eng


def test_strength_zero_makes_every_denoised_zero_so_euler_ends_at_zero(engine):
    prompt = patched_ksampler_prompt("CFGNorm", {"strength": 0.0})
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success", sink.of("execution_error")
    latent = engine.executor.cache  # the KSampler's output lives in the output cache
    samples = [v for e in latent.entries.values() for slot in e.values for v in slot
               if isinstance(v, dict) and "samples" in v]
    # x + (0 - sigma) * (x - 0) / sigma at the last step: zero up to float rounding (the start noise is ~14)
    assert len(samples) >= 2  # the empty latent and the sampled one
    assert all(s["samples"].abs().max() < 1e-5 for s in samples)
