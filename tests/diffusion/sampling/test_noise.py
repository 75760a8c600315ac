"""Per-step noise: the ancestral generator rule and the Brownian tree."""
import math

import pytest
import torch

from diffusion.sampling.noise import (BrownianTree, BrownianTreeNoiseSampler, ancestral_generator_seed,
                                      ancestral_noise_sampler, default_noise_sampler, neg_log_sigma)


def test_ancestral_generator_seed_offsets_on_cpu():
    assert ancestral_generator_seed(42, "cpu") == 43
    assert ancestral_generator_seed(42, torch.device("cpu")) == 43
    assert ancestral_generator_seed(42, "cuda") == 42
    assert ancestral_generator_seed(42, "meta") == 42


def test_default_noise_sampler_is_a_seeded_stream():
    x = torch.zeros(2, 4, 8, 8)
    ns = default_noise_sampler(x, seed=7)
    first, second = ns(1.0, 0.5), ns(0.5, 0.1)
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(first, torch.randn(x.shape, generator=gen))
    assert torch.equal(second, torch.randn(x.shape, generator=gen))
    assert first.shape == x.shape and first.dtype == x.dtype


def test_ancestral_noise_sampler_uses_seed_plus_one_on_cpu():
    x = torch.zeros(1, 4, 8, 8)
    ns = ancestral_noise_sampler(x, {"seed": 10})
    assert torch.equal(ns(1.0, 0.5), torch.randn(x.shape, generator=torch.Generator().manual_seed(11)))
    custom = default_noise_sampler(x, 3)
    assert ancestral_noise_sampler(x, {"seed": 10}, custom) is custom


def test_neg_log_sigma():
    assert neg_log_sigma(1.0) == 0.0
    assert neg_log_sigma(math.e) == pytest.approx(-1.0)
    assert neg_log_sigma(0.0) == math.inf


X = torch.zeros(2, 4, 32, 32)          # 8192 independent increments per query


def test_brownian_tree_is_deterministic_and_seed_dependent():
    a = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=5)
    b = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=5)
    c = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=6)
    assert torch.equal(a(10.0, 3.0), b(10.0, 3.0))
    assert not torch.allclose(a(10.0, 3.0), c(10.0, 3.0))


def test_brownian_tree_is_independent_of_query_order():
    a = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=1)
    b = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=1)
    a_first = a(7.0, 0.2)
    for s, s_next in [(14.6, 9.0), (0.5, 0.04), (2.0, 1.9)]:
        b(s, s_next)
    assert torch.equal(a_first, b(7.0, 0.2))
    assert torch.equal(a(2.0, 1.9), b(2.0, 1.9))


@pytest.mark.parametrize("interval", [(14.6, 0.03), (14.6, 10.0), (1.0, 0.9), (0.05, 0.0499), (3.0, 3.0 * (1 - 1e-6))])
def test_brownian_increments_have_unit_variance(interval):
    ns = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=3)
    z = ns(*interval)
    assert z.shape == X.shape
    assert abs(float(z.mean())) < 0.04
    assert float(z.std()) == pytest.approx(1.0, abs=0.04)


def test_brownian_increments_add_up_and_disjoint_ones_are_uncorrelated():
    ns = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=9)
    s0, sm, s1 = 8.0, 1.3, 0.11
    dt = lambda a, b: abs(math.log(a) - math.log(b))
    whole = ns(s0, s1) * math.sqrt(dt(s0, s1))
    parts = ns(s0, sm) * math.sqrt(dt(s0, sm)) + ns(sm, s1) * math.sqrt(dt(sm, s1))
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=0)
    first, second = ns(s0, sm).flatten(), ns(sm, s1).flatten()
    corr = float((first * second).mean() / (first.std() * second.std()))
    assert abs(corr) < 0.05
    # the increment over a sub-interval is correlated with the whole as sqrt(dt_part/dt_whole)
    corr_whole = float((ns(s0, sm).flatten() * ns(s0, s1).flatten()).mean())
    assert corr_whole == pytest.approx(math.sqrt(dt(s0, sm) / dt(s0, s1)), abs=0.05)


def test_brownian_tree_batch_seeds_give_per_item_paths():
    x1 = torch.zeros(1, 4, 16, 16)
    x3 = torch.zeros(3, 4, 16, 16)
    per_item = BrownianTreeNoiseSampler(x3, 0.03, 14.6, seed=[4, 5, 4])
    single = BrownianTreeNoiseSampler(x1, 0.03, 14.6, seed=[5])
    z = per_item(5.0, 2.0)
    assert z.shape == x3.shape
    assert torch.equal(z[0], z[2])
    assert torch.equal(z[1], single(5.0, 2.0)[0])
    with pytest.raises(ValueError):
        BrownianTreeNoiseSampler(x3, 0.03, 14.6, seed=[1, 2])


def test_brownian_tree_queries_clamp_to_its_range_and_zero_interval():
    ns = BrownianTreeNoiseSampler(X, 0.03, 14.6, seed=2)
    assert torch.equal(ns(1.0, 1.0), torch.zeros_like(X))
    # sigma 0 maps to t = inf, clamped to the end of the tree (sigma_min)
    torch.testing.assert_close(ns(0.5, 0.0), ns(0.5, 0.03))


def test_brownian_tree_endpoint_variance():
    tree = BrownianTree(0.0, 4.0, (20000,), seed=11)
    assert float(tree(0.0).abs().max()) == 0.0
    assert float(tree(4.0).var()) == pytest.approx(4.0, rel=0.05)
    assert float(tree(1.0).var()) == pytest.approx(1.0, rel=0.05)
    assert float((tree(3.7) - tree(1.2)).var()) == pytest.approx(2.5, rel=0.05)
