"""GITSScheduler: the noise levels GITS (Chen et al., ICML 2024) found best for each step count and guidance
coefficient on SD1.x, read from diffusion/sampling/gits_noise_levels.json. Past 20 steps the 20-step schedule is
interpolated log-linearly; with denoise < 1 only the last `steps * denoise` steps are kept; the last sigma is 0."""
from __future__ import annotations

import json
import os
from functools import lru_cache

import numpy as np
import torch

from nodes.declare import Float, Int, Output, node

LEVELS_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "diffusion", "sampling",
                           "gits_noise_levels.json")


@lru_cache(maxsize=1)
def noise_levels() -> dict:
    with open(LEVELS_FILE, encoding="utf-8") as f:
        return json.load(f)["levels"]


def loglinear_interp(t_steps: list, num_steps: int) -> np.ndarray:
    """`num_steps` decreasing values spaced like `t_steps`, interpolated in log space."""
    xs = np.linspace(0, 1, len(t_steps))
    ys = np.log(np.asarray(t_steps, dtype=np.float64)[::-1])
    return np.exp(np.interp(np.linspace(0, 1, num_steps), xs, ys))[::-1].copy()


def gits_sigmas(coeff: float, steps: int, denoise: float = 1.0) -> torch.Tensor:
    total = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total = round(steps * denoise)
    table = noise_levels()[f"{round(coeff, 2):.2f}"]
    sigmas = list(table[steps - 2]) if steps <= 20 else list(loglinear_interp(table[-1], steps + 1))
    sigmas = sigmas[-(total + 1):]
    sigmas[-1] = 0
    return torch.FloatTensor(sigmas)


@node(category="sampling/custom_sampling/schedulers", outputs=[Output("SIGMAS", tooltip="The noise schedule.")])
class GITSScheduler:
    """Noise levels optimized by GITS for few-step sampling (made for SD1.x)."""
    coeff = Float(1.20, min=0.80, max=1.50, step=0.05, tooltip="The guidance coefficient the schedule was "
                  "optimized for (steps of 0.05).")
    steps = Int(10, min=2, max=1000, tooltip="Sampling steps.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Below 1, only the last steps are kept.")

    def run(self, ctx, coeff, steps, denoise):
        return (gits_sigmas(coeff, steps, denoise),)


NODES = [GITSScheduler]
