"""Wrappers and callbacks packs attach to a MODEL (ComfyUI's comfy.patcher_extension), and running them.

A wrapper is `wrapper(executor, *args, **kwargs)`: it may change the arguments, call `executor(*args, **kwargs)` to
run the next wrapper (and finally the wrapped function), and change the result. They are kept in
`model_options["transformer_options"]["wrappers"][kind][key]`, so clones copy them with the other options. The kinds
the engine runs are listed in WRAPPER_KINDS; attaching another kind is an error naming it, rather than a wrapper
that silently never runs. Callbacks (`callback(model)`) run at the points in CALLBACK_KINDS.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional


class WrappersMP:
    """Wrapper kinds by ComfyUI's names."""
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"


class CallbacksMP:
    """Callback kinds by ComfyUI's names."""
    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"


# What the engine runs: OUTER_SAMPLE around a whole sampler run (outer_sample.py), APPLY_MODEL around each
# denoiser evaluation (model.model.apply_model), DIFFUSION_MODEL around each UNet call; ON_PRE_RUN before a sampler
# run, ON_CLEANUP after it (also on errors), ON_CLONE on clone().
WRAPPER_KINDS = frozenset({WrappersMP.OUTER_SAMPLE, WrappersMP.PREPARE_SAMPLING, WrappersMP.APPLY_MODEL,
                           WrappersMP.DIFFUSION_MODEL})
CALLBACK_KINDS = frozenset({CallbacksMP.ON_PRE_RUN, CallbacksMP.ON_CLEANUP, CallbacksMP.ON_CLONE})


def check_wrapper_type(kind: str) -> None:
    if kind not in WRAPPER_KINDS:
        raise NotImplementedError(f"wrappers of kind {kind!r} are not run by Tessera (supported: "
                                  f"{', '.join(sorted(WRAPPER_KINDS))})")


def check_callback_type(kind: str) -> None:
    if kind not in CALLBACK_KINDS:
        raise NotImplementedError(f"callbacks of kind {kind!r} are not run by Tessera (supported: "
                                  f"{', '.join(sorted(CALLBACK_KINDS))})")


def get_all_wrappers(kind: str, transformer_options: Optional[dict]) -> List[Callable]:
    """Every wrapper of `kind` in a transformer_options dict, in the order they were added."""
    by_key = ((transformer_options or {}).get("wrappers") or {}).get(kind) or {}
    return [w for ws in by_key.values() for w in ws]


def get_all_callbacks(kind: str, transformer_options: Optional[dict]) -> List[Callable]:
    by_key = ((transformer_options or {}).get("callbacks") or {}).get(kind) or {}
    return [c for cs in by_key.values() for c in cs]


def add_wrapper_with_key(kind: str, key: str, wrapper: Callable, transformer_options: dict,
                         is_model_options: bool = False) -> None:
    """The module-level form (on an options dict instead of a model)."""
    check_wrapper_type(kind)
    options = transformer_options.setdefault("transformer_options", {}) if is_model_options else transformer_options
    options.setdefault("wrappers", {}).setdefault(kind, {}).setdefault(key, []).append(wrapper)


class WrapperExecutor:
    """Calls `original` through `wrappers` (first added = outermost). `class_obj` is the object whose method is
    wrapped (ComfyUI passes it to wrappers that need their owner)."""

    def __init__(self, original: Callable, class_obj: Any, wrappers: List[Callable], index: int = 0) -> None:
        self.original, self.class_obj, self.wrappers, self.index = original, class_obj, wrappers, index

    @classmethod
    def new_executor(cls, original: Callable, wrappers: List[Callable]) -> "WrapperExecutor":
        return cls(original, None, list(wrappers))

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: Any, wrappers: List[Callable]) -> "WrapperExecutor":
        return cls(original, class_obj, list(wrappers))

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.index >= len(self.wrappers):
            return self.original(*args, **kwargs)
        following = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.index + 1)
        return self.wrappers[self.index](following, *args, **kwargs)


def merge_nested_dicts(dict1: Dict, dict2: Dict, copy_dict1: bool = True) -> Dict:
    """dict2 merged into (a copy of) dict1: nested dicts merged, lists concatenated, other values from dict2."""
    merged = dict(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested_dicts(merged[key], value)
        elif isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        else:
            merged[key] = value
    return merged
