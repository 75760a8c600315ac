"""Per-step noise for ancestral and SDE samplers.

A noise sampler is a callable `fn(sigma, sigma_next) -> tensor shaped like x` of unit-variance Gaussian noise.

* Ancestral samplers (docs/architecture.md §7) draw i.i.d. noise from a `torch.Generator` on the latent's device, seeded with
  the job's seed, **plus one when the latent is on the CPU** (`ancestral_generator_seed`) so that the per-step noise
  stream differs from the CPU stream the initial latent noise was drawn from with the same seed.
* SDE samplers use a Brownian tree seeded with the seed itself (`BrownianTreeNoiseSampler`): the noise for a step
  is the normalised increment of a single Brownian path W over a transformed time, so the result of an SDE sampler
  converges as the step count grows (the same path is refined instead of redrawn).
"""
from __future__ import annotations

import math
import struct
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence, Union

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------------------------------------
# i.i.d. noise (ancestral samplers)

def ancestral_generator_seed(seed: int, device) -> int:
    """Seed of the per-step generator of ancestral samplers: `seed + 1` when the latent lives on the CPU, else `seed`.

    The initial latent noise is drawn from the CPU generator seeded with `seed`; drawing the per-step noise from a
    second CPU generator with the very same seed would repeat that stream, so on the CPU the step noise is offset
    by one (docs/architecture.md §7).  On an accelerator the step generator is a different device's generator already."""
    seed = int(seed)
    if torch.device(device).type == "cpu":
        seed += 1
    return seed & _MASK64


def default_noise_sampler(x: torch.Tensor, seed: Optional[int] = None) -> NoiseSampler:
    """i.i.d. standard normal noise shaped like `x`, from a generator on x's device seeded with `seed` as given
    (apply `ancestral_generator_seed` first for the ancestral convention); the global RNG when `seed` is None."""
    if seed is None:
        return lambda sigma, sigma_next: torch.randn_like(x)
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(seed) & _MASK64)

    def sample(sigma, sigma_next):
        return torch.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)
    return sample


def ancestral_noise_sampler(x: torch.Tensor, extra_args: Optional[dict],
                            noise_sampler: Optional[NoiseSampler] = None) -> NoiseSampler:
    """The noise sampler an ancestral sampler uses: `noise_sampler` if given, else i.i.d. noise seeded with
    `ancestral_generator_seed(extra_args["seed"], x.device)` (global RNG when there is no seed)."""
    if noise_sampler is not None:
        return noise_sampler
    seed = (extra_args or {}).get("seed")
    return default_noise_sampler(x, None if seed is None else ancestral_generator_seed(seed, x.device))


def sde_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, extra_args: Optional[dict],
                      noise_sampler: Optional[NoiseSampler] = None) -> NoiseSampler:
    """The noise sampler an SDE sampler uses: `noise_sampler` if given, else a Brownian tree over the positive range
    of `sigmas` seeded with `extra_args["seed"]` (a random seed when there is none)."""
    if noise_sampler is not None:
        return noise_sampler
    positive = sigmas[sigmas > 0]
    sigma_min, sigma_max = float(positive.min()), float(positive.max())
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=(extra_args or {}).get("seed"))


# ---------------------------------------------------------------------------------------------------------------------
# Brownian tree (SDE samplers)

def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _mix(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integer parts (SplitMix64 chained)."""
    h = 0x243F6A8885A308D3
    for part in parts:
        h = _splitmix64(h ^ (int(part) & _MASK64))
    return h >> 1


def _float_bits(t: float) -> int:
    return struct.unpack("<q", struct.pack("<d", float(t)))[0]


class BrownianTree:
    """One Brownian path W on [t0, t1] with W(t0) = 0, queried at arbitrary times, deterministic given the seed.

    Brownian-bridge bisection (the "Brownian tree" of Li et al. 2020, *Scalable Gradients for Stochastic Differential
    Equations*, §4 / Gaines & Lyons 1997): W(t1) = sqrt(t1 − t0)·z_root, and the value at the midpoint m of a dyadic
    interval [a, b] with known endpoint values is drawn from the bridge

        W(m) = (W(a) + W(b))/2 + sqrt((b − a)/4)·z_node,

    where each z_node comes from its own generator seeded by hashing (seed, depth, index), so a node's value does not
    depend on the order or the set of queries.  A query descends to the dyadic leaf (width ≤ `tol`) that contains t and
    finishes with one bridge draw from the leaf's endpoints, W(t) = W(a) + (t−a)/(b−a)·(W(b)−W(a)) +
    sqrt((t−a)(b−t)/(b−a))·z, z seeded by (seed, leaf, bits of t).  All values of the dyadic skeleton, and W at any
    points in different leaves, have exactly the Brownian joint law (bridges over disjoint leaves are independent
    given their endpoints); only two distinct query times inside the same leaf are joined approximately.  The leaf
    width `tol` defaults to (t1 − t0)·2⁻³⁰ (~6e-9 for SD's −log σ range), i.e. 30 small draws per fresh query;
    recently used nodes are cached, so the shared top of consecutive query paths is not redrawn.  Noise is drawn on the CPU in float32 (device-independent) and
    then moved to `device`/`dtype`.
    """

    def __init__(self, t0: float, t1: float, shape: Sequence[int], seed: int, dtype=torch.float32,
                 device="cpu", tol: Optional[float] = None, cache_size: int = 256):
        if not t1 > t0:
            raise ValueError(f"BrownianTree needs t0 < t1, got {t0}, {t1}")
        self.t0, self.t1 = float(t0), float(t1)
        self.shape = tuple(shape)
        self.seed = int(seed) & _MASK64
        self.dtype, self.device = dtype, torch.device(device)
        tol = (self.t1 - self.t0) * 2.0 ** -30 if tol is None else float(tol)
        self.depth = max(1, math.ceil(math.log2((self.t1 - self.t0) / tol)))
        self._cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._cache_size = cache_size
        self._w1 = math.sqrt(self.t1 - self.t0) * self._normal(_mix(self.seed, 0, 0))

    def _normal(self, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(self.shape, generator=gen, dtype=torch.float32)

    def _point(self, depth: int, index: int) -> float:
        return self.t0 + (self.t1 - self.t0) * index / (1 << depth)

    def _node(self, depth: int, index: int, w_a: torch.Tensor, w_b: torch.Tensor) -> torch.Tensor:
        """W at dyadic point index/2^depth (index odd), given W at its two neighbours one level up."""
        key = (depth, index)
        value = self._cache.get(key)
        if value is None:
            half_width = (self.t1 - self.t0) / (1 << depth)
            value = 0.5 * (w_a + w_b) + math.sqrt(half_width / 2.0) * self._normal(_mix(self.seed, depth, index))
            self._cache[key] = value
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return value

    def _value_cpu(self, t: float) -> torch.Tensor:
        t = min(max(float(t), self.t0), self.t1)
        depth, index = 0, 0                           # current interval [index, index+1] / 2^depth
        w_a, w_b = torch.zeros(self.shape), self._w1
        while depth < self.depth:
            a, b = self._point(depth, index), self._point(depth, index + 1)
            if t == a:
                return w_a
            if t == b:
                return w_b
            depth, mid_index = depth + 1, 2 * index + 1
            w_m = self._node(depth, mid_index, w_a, w_b)
            m = self._point(depth, mid_index)
            if t == m:
                return w_m
            if t < m:
                index, w_b = 2 * index, w_m
            else:
                index, w_a = mid_index, w_m
        a, b = self._point(depth, index), self._point(depth, index + 1)
        if t <= a:
            return w_a
        if t >= b:
            return w_b
        z = self._normal(_mix(self.seed, 0xB1D6E, depth, index, _float_bits(t)))
        return w_a + (t - a) / (b - a) * (w_b - w_a) + math.sqrt((t - a) * (b - t) / (b - a)) * z

    def __call__(self, t: float) -> torch.Tensor:
        """W(t) (t clamped into [t0, t1]) as a tensor of `shape` on `device`/`dtype`."""
        return self._value_cpu(t).to(device=self.device, dtype=self.dtype)


def neg_log_sigma(sigma) -> float:
    """The default Brownian time t = −log σ (increasing as sampling proceeds; the natural time of DPM-Solver);
    +inf at σ = 0."""
    sigma = float(sigma)
    return math.inf if sigma <= 0.0 else -math.log(sigma)


class BrownianTreeNoiseSampler:
    """Noise sampler backed by a Brownian tree: `sampler(sigma, sigma_next)` returns

        (W(t(sigma_next)) − W(t(sigma))) / sqrt(|t(sigma_next) − t(sigma)|),

    i.e. unit-variance noise that is the normalised increment of one Brownian path in the transformed time
    t = transform(σ) (default −log σ).  Deterministic given the seed and consistent across queries: increments over
    adjacent intervals add up to the increment over their union.  Times are clamped into the tree's range
    [t(σ_max), t(σ_min)] (in whichever order the transform gives).  `seed` may be a list with one seed per batch item
    (each item then follows its own tree) or an int (one tree over the whole batch); None picks a random seed.
    """

    def __init__(self, x: torch.Tensor, sigma_min: float, sigma_max: float,
                 seed: Union[int, Sequence[int], None] = None, transform: Callable = neg_log_sigma,
                 tol: Optional[float] = None):
        self.transform = transform
        t_a, t_b = float(transform(float(sigma_min))), float(transform(float(sigma_max)))
        t0, t1 = min(t_a, t_b), max(t_a, t_b)
        if t1 == t0:
            t1 = t0 + 1e-3
        if seed is None:
            seed = int(torch.randint(0, 2 ** 62, ()).item())
        kwargs = dict(dtype=x.dtype, device=x.device, tol=tol)
        if isinstance(seed, (list, tuple)):
            if len(seed) != x.shape[0]:
                raise ValueError(f"{len(seed)} seeds for a batch of {x.shape[0]}")
            self.trees: List[BrownianTree] = [BrownianTree(t0, t1, x.shape[1:], s, **kwargs) for s in seed]
            self.batched = True
        else:
            self.trees = [BrownianTree(t0, t1, x.shape, int(seed), **kwargs)]
            self.batched = False
        self.shape = x.shape
        self.t0, self.t1 = t0, t1

    def time(self, sigma) -> float:
        """transform(sigma) clamped into the tree's range."""
        return min(max(float(self.transform(float(sigma))), self.t0), self.t1)

    def w(self, sigma) -> torch.Tensor:
        """W at time(sigma) (the whole batch)."""
        t = self.time(sigma)
        if self.batched:
            return torch.stack([tree(t) for tree in self.trees])
        return self.trees[0](t)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        dt = abs(self.time(sigma_next) - self.time(sigma))
        if dt == 0.0:
            return torch.zeros(self.shape, dtype=self.trees[0].dtype, device=self.trees[0].device)
        return (self.w(sigma_next) - self.w(sigma)) / math.sqrt(dt)
