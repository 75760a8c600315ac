"""LatentBatch, AlignYourStepsScheduler and DifferentialDiffusion against their published definitions."""
import math

import numpy as np
import torch

from diffusion.sampling.model_sampling import DiscreteModelSampling
from nodes.custom_sampling import AYS_NOISE_LEVELS, AlignYourStepsScheduler
from nodes.latent import LatentBatch
from nodes.model_patches import differential_mask


def test_latent_batch_resizes_and_keeps_indices():
    a = {"samples": torch.ones(2, 4, 8, 8), "batch_index": [3, 4]}
    b = {"samples": torch.zeros(1, 4, 4, 4)}
    (out,) = LatentBatch().run(None, a, b)
    assert out["samples"].shape == (3, 4, 8, 8)
    assert out["batch_index"] == [3, 4, 0]


def test_ays_ten_steps_is_the_published_table():
    (sigmas,) = AlignYourStepsScheduler().run(None, "SD1", 10, 1.0)
    expected = list(AYS_NOISE_LEVELS["SD1"][:-1]) + [0.0]
    assert torch.allclose(sigmas, torch.tensor(expected), rtol=1e-6)


def test_ays_other_counts_interpolate_in_log_space():
    (sigmas,) = AlignYourStepsScheduler().run(None, "SDXL", 4, 1.0)
    levels = np.array(AYS_NOISE_LEVELS["SDXL"])
    want = np.exp(np.interp(np.linspace(0, 1, 5), np.linspace(0, 1, len(levels)), np.log(levels[::-1])))[::-1].copy()
    want[-1] = 0.0
    assert torch.allclose(sigmas, torch.tensor(want, dtype=torch.float32), rtol=1e-5)
    (part,) = AlignYourStepsScheduler().run(None, "SDXL", 4, 0.5)
    assert torch.allclose(part[:-1], sigmas[-3:-1]) and len(part) == 3 and part[-1] == 0


class _Model:
    model_sampling = DiscreteModelSampling()


def test_differential_mask_threshold_follows_the_schedule():
    sampling = _Model.model_sampling
    sigmas = torch.tensor([sampling.sigma_max, 1.0, 0.0])
    mask = torch.linspace(0, 1, 11).reshape(1, 1, 1, 11)
    fn = differential_mask(1.0)
    first = fn(torch.tensor([sampling.sigma_max]), mask, {"model": _Model, "sigmas": sigmas})
    assert first.sum() == 1  # at the start only mask == 1 is repainted
    late = fn(torch.tensor([sampling.sigma_min]), mask, {"model": _Model, "sigmas": sigmas})
    assert late.eq(1).all()  # at the end everything is
    t_mid = float(sampling.timestep(1.0))
    t_to, t_from = float(sampling.timestep(sampling.sigma_min)), float(sampling.timestep(sampling.sigma_max))
    threshold = (t_mid - t_to) / (t_from - t_to)
    mid = fn(torch.tensor([1.0]), mask, {"model": _Model, "sigmas": sigmas})
    assert torch.equal(mid, (mask >= threshold).float())
    soft = differential_mask(0.25)(torch.tensor([1.0]), mask, {"model": _Model, "sigmas": sigmas})
    assert torch.allclose(soft, 0.25 * mid + 0.75 * mask)
    assert not math.isnan(threshold)
