"""OUTER_SAMPLE wrappers: a pack's function around a whole sampler run, as ComfyUI's CFGGuider.sample runs them.

A wrapper is called as `wrapper(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback,
disable_pbar, seed, latent_shapes=...)` and calls `executor(...)` to sample. `executor.class_obj` is the guider of
the run (its `model_patcher`, `model_options`, `conds`, `inner_model`, `cfg`). For the run, the MODEL's
`model_options` is a clone the wrapper may add to (more wrappers, patches): what it adds applies to this run's
model calls and is gone afterwards, as ComfyUI clones the options for each sample() call.
"""
from __future__ import annotations

from typing import Any, Callable

from model_management.patcher_extension import WrapperExecutor, WrappersMP, get_all_wrappers
from model_management.patcher_face import copy_options


class RunGuider:
    """The guider a wrapper sees (`executor.class_obj`) for a run of our sampler."""

    def __init__(self, model: Any, guidance: Any) -> None:
        self.model_patcher = model
        self.guidance = guidance
        self.inner_model = getattr(model, "model", model)
        self.cfg = getattr(guidance, "cfg", 1.0)
        self.conds = {"positive": getattr(guidance, "positive", None), "negative": getattr(guidance, "negative", None)}

    @property
    def model_options(self) -> dict:
        return self.model_patcher.model_options  # live: the run's clone

    @model_options.setter
    def model_options(self, options: dict) -> None:
        self.model_patcher.model_options = options


def run_outer_sample(model: Any, guidance: Any, inner: Callable, *args: Any) -> Any:
    """`inner(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, latent_shapes=...)`
    through the MODEL's OUTER_SAMPLE wrappers (directly when it has none). Hooks carried by the conditioning's
    controls (model_management/hooks.py) are registered into the run's options first, so wrappers they bring
    run too."""
    from diffusion.controlnet.control_protocol import distinct_controls  # noqa: PLC0415
    from model_management.hooks import control_hooks, register_hooks  # noqa: PLC0415
    lists = guidance.entry_lists() if hasattr(guidance, "entry_lists") else []
    hooks = control_hooks(distinct_controls(lists))
    latent_shapes = [tuple(args[1].shape)]
    original = getattr(model, "model_options", None)
    if not hooks and not get_all_wrappers(WrappersMP.OUTER_SAMPLE, (original or {}).get("transformer_options")):
        return inner(*args, latent_shapes=latent_shapes)
    model.model_options = copy_options(original)
    try:
        if hooks:
            register_hooks(hooks, model, model.model_options)
        wrappers = get_all_wrappers(WrappersMP.OUTER_SAMPLE, model.model_options.get("transformer_options"))
        executor = WrapperExecutor.new_class_executor(inner, RunGuider(model, guidance), wrappers)
        return executor.execute(*args, latent_shapes=latent_shapes)
    finally:
        model.model_options = original
