"""The step loop the one-call-per-step samplers share, and the small helpers every sampler module uses.

A sampler written over `StepLoop` keeps only its update rule:

    loop = StepLoop(model, sigmas, extra_args, callback)
    for i, sigma, sigma_next, denoised in loop.steps(lambda: x):
        x = <update from x, denoised, sigma, sigma_next>
    return loop.result(x)

`steps` evaluates the model at the current x (read through the given function, so the body may rebind x), reports
the step to the callback (progress, previews, interrupts), ends the run with the denoised value on a step to σ = 0
(the exact solution there: every sampler here does so), and passes over a repeated σ (nothing to integrate).
Either rule can be switched off for samplers that treat those steps themselves.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple

import torch


def denoise(model: Callable, x: torch.Tensor, sigma: float, extra_args: dict) -> torch.Tensor:
    """D(x, σ): the model called with a [B] sigma batch, as the sampler interface specifies."""
    return model(x, x.new_full([x.shape[0]], float(sigma)), **extra_args)


def report(callback: Optional[Callable], x: torch.Tensor, i: int, sigma, denoised: torch.Tensor,
           sigma_hat=None) -> None:
    """One step's callback in the k-diffusion shape."""
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma if sigma_hat is None else sigma_hat,
                  "denoised": denoised})


def sigma_list(sigmas: torch.Tensor) -> List[float]:
    """The schedule as Python floats (the step coefficients are computed in double precision)."""
    return [float(s) for s in sigmas]


class StepLoop:
    def __init__(self, model: Callable, sigmas: torch.Tensor, extra_args: Optional[dict] = None,
                 callback: Optional[Callable] = None, *, evaluate: Callable = denoise,
                 end_on_zero: bool = True, skip_repeated: bool = True) -> None:
        self.model, self.sigmas, self.callback, self.evaluate = model, sigmas, callback, evaluate
        self.extra_args = extra_args if extra_args is not None else {}
        self.sigma_values = sigma_list(sigmas)
        self.end_on_zero, self.skip_repeated = end_on_zero, skip_repeated
        self.final: Optional[torch.Tensor] = None  # the denoised value the run ended with (a step to σ = 0)

    def steps(self, current_x: Callable[[], torch.Tensor]) -> Iterator[Tuple[int, float, float, object]]:
        """(i, σ_i, σ_{i+1}, evaluation) for each step the sampler must integrate; the evaluation is what
        `evaluate` returns (the denoised tensor, or a tuple for samplers that need more)."""
        values = self.sigma_values
        for i in range(len(values) - 1):
            sigma, sigma_next = values[i], values[i + 1]
            x = current_x()
            evaluation = self.evaluate(self.model, x, sigma, self.extra_args)
            denoised = evaluation[0] if isinstance(evaluation, tuple) else evaluation
            report(self.callback, x, i, self.sigmas[i], denoised)
            if self.end_on_zero and sigma_next <= 0.0:
                self.final = denoised
                return
            if self.skip_repeated and sigma_next == sigma:
                continue
            yield i, sigma, sigma_next, evaluation

    def result(self, x: torch.Tensor) -> torch.Tensor:
        """The sample: the final denoised value when the run ended on σ = 0, else the last x."""
        return self.final if self.final is not None else x
