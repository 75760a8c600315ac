"""Name -> function registries for samplers and schedulers, filled by the modules that define them."""
from __future__ import annotations

import importlib
from typing import Callable, Dict, List

SAMPLERS: Dict[str, Callable] = {}
SCHEDULERS: Dict[str, Callable] = {}

_SAMPLER_MODULES = ("diffusion.sampling.samplers_basic", "diffusion.sampling.samplers_dpmpp",
                    "diffusion.sampling.samplers_multistep", "diffusion.sampling.samplers_unipc",
                    "diffusion.sampling.samplers_cfg_pp", "diffusion.sampling.samplers_sde_extra")
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


# The order editors show (the order other tools list them in); names registered but not here come last.
_SAMPLER_ORDER = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
                  "exp_heun_2_x0", "exp_heun_2_x0_sde", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
                  "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu",
                  "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
                  "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v",
                  "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
                  "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
                  "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
_SCHEDULER_ORDER = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"]


def _ordered(names, order) -> List[str]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(order)), n))


def sampler_names() -> List[str]:
    _load(_SAMPLER_MODULES)
    return _ordered(SAMPLERS, _SAMPLER_ORDER)


def scheduler_names() -> List[str]:
    _load(_SCHEDULER_MODULES)
    return _ordered(SCHEDULERS, _SCHEDULER_ORDER)


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
