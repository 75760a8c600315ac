"""Name -> function registries for samplers and schedulers, filled by the modules that define them."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

SAMPLERS: Dict[str, Callable] = {}
SCHEDULERS: Dict[str, Callable] = {}

_SAMPLER_MODULES = ("diffusion.sampling.samplers_basic", "diffusion.sampling.samplers_dpmpp",
                    "diffusion.sampling.samplers_multistep", "diffusion.sampling.samplers_unipc")
_SCHEDULER_MODULES = ("diffusion.sampling.schedulers",)


def sampler(name: str):
    """Decorator: register a sampler function under `name` (also returns it unchanged)."""
    def register(fn: Callable) -> Callable:
        SAMPLERS[name] = fn
        return fn
    return register


def scheduler(name: str):
    def register(fn: Callable) -> Callable:
        SCHEDULERS[name] = fn
        return fn
    return register


def _load(modules) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def sampler_names() -> List[str]:
    _load(_SAMPLER_MODULES)
    return list(SAMPLERS)


def scheduler_names() -> List[str]:
    _load(_SCHEDULER_MODULES)
    return list(SCHEDULERS)


def get_sampler(name: str) -> Callable:
    _load(_SAMPLER_MODULES)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_scheduler(name: str) -> Callable:
    _load(_SCHEDULER_MODULES)
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name]
