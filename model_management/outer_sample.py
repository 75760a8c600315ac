"""OUTER_SAMPLE and PREPARE_SAMPLING wrappers: a pack's functions around a whole sampler run and around its
preparation, as ComfyUI's CFGGuider.sample runs them.

A wrapper is called as `wrapper(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback,
disable_pbar, seed, latent_shapes=...)` and calls `executor(...)` to sample. `executor.class_obj` is the guider of
the run (its `model_patcher`, `model_options`, `conds`, `inner_model`, `cfg`). For the run, the MODEL's
`model_options` is a clone the wrapper may add to (more wrappers, patches): what it adds applies to this run's
model calls and is gone afterwards, as ComfyUI clones the options for each sample() call.

A PREPARE_SAMPLING wrapper is called as `wrapper(executor, model, noise_shape, conds, model_options=...)` and
calls `executor(model, noise_shape, conds, model_options=...)`, which makes the UNet resident with the working
memory `model.memory_required(noise_shape)` kept free and returns `(model.model, conds, additional models)`. A
wrapper may hand the executor a clone (sharing the UNet) or change `model.model` attributes for the estimate (a
memory_usage_factor); a result naming another network or other conds is refused, as the engine samples the
MODEL and conds it was given.
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


def run_prepare_sampling(model: Any, guidance: Any, noise_shape: Any) -> None:
    """Make `model`'s UNet resident for a run on latents of `noise_shape`, through its PREPARE_SAMPLING wrappers."""
    options = getattr(model, "model_options", None) or {}
    wrappers = get_all_wrappers(WrappersMP.PREPARE_SAMPLING, options.get("transformer_options"))
    conds = RunGuider(model, guidance).conds

    def prepare(patcher: Any, shape: Any, given: Any, model_options: Any = None) -> tuple:
        shape = list(shape)
        # the positive and negative halves go through the UNet together: twice the batch, as ComfyUI estimates
        patcher.make_resident(int(patcher.memory_required([shape[0] * 2] + shape[1:])))
        return patcher.model, given, []

    if not wrappers:  # without wrappers the device loader places the UNet at its first call, as it always does
        return
    executor = WrapperExecutor.new_executor(prepare, wrappers)
    real_model, returned, _ = executor.execute(model, noise_shape, conds, model_options=options)
    if getattr(real_model, "diffusion_model", None) is not model.model.diffusion_model:
        raise ValueError("a PREPARE_SAMPLING wrapper returned another network than the MODEL being sampled")
    if returned is not conds and any(returned.get(k) is not v for k, v in conds.items()):
        raise NotImplementedError("a PREPARE_SAMPLING wrapper replaced the conditioning; Tessera samples the "
                                  "conditioning the sampler node was given")


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
