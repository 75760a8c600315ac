"""The sampler and scheduler tables: every name KSampler offers, mapped to its function, built here once.

The order is the one editors show (the reference's list). The `_gpu` names are aliases: our Brownian-tree noise
does not depend on the device, so they run the same function. Both tables are read-only.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Callable, List, Mapping

import diffusion.sampling.samplers_basic as basic
import diffusion.sampling.samplers_cfg_pp as cfg_pp
import diffusion.sampling.samplers_dpmpp as dpmpp
import diffusion.sampling.samplers_multistep as multistep
import diffusion.sampling.samplers_sde_extra as sde_extra
import diffusion.sampling.samplers_unipc as unipc
import diffusion.sampling.schedulers as schedulers

SAMPLERS: Mapping[str, Callable] = MappingProxyType({
    "euler": basic.sample_euler,
    "euler_cfg_pp": basic.sample_euler_cfg_pp,
    "euler_ancestral": basic.sample_euler_ancestral,
    "euler_ancestral_cfg_pp": cfg_pp.sample_euler_ancestral_cfg_pp,
    "heun": basic.sample_heun,
    "heunpp2": basic.sample_heunpp2,
    "exp_heun_2_x0": sde_extra.sample_exp_heun_2_x0,
    "exp_heun_2_x0_sde": sde_extra.sample_exp_heun_2_x0_sde,
    "dpm_2": basic.sample_dpm_2,
    "dpm_2_ancestral": basic.sample_dpm_2_ancestral,
    "lms": basic.sample_lms,
    "dpm_fast": basic.sample_dpm_fast,
    "dpm_adaptive": basic.sample_dpm_adaptive,
    "dpmpp_2s_ancestral": dpmpp.sample_dpmpp_2s_ancestral,
    "dpmpp_2s_ancestral_cfg_pp": cfg_pp.sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_sde": dpmpp.sample_dpmpp_sde,
    "dpmpp_sde_gpu": dpmpp.sample_dpmpp_sde,
    "dpmpp_2m": dpmpp.sample_dpmpp_2m,
    "dpmpp_2m_cfg_pp": cfg_pp.sample_dpmpp_2m_cfg_pp,
    "dpmpp_2m_sde": dpmpp.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_gpu": dpmpp.sample_dpmpp_2m_sde,
    "dpmpp_2m_sde_heun": sde_extra.sample_dpmpp_2m_sde_heun,
    "dpmpp_2m_sde_heun_gpu": sde_extra.sample_dpmpp_2m_sde_heun,
    "dpmpp_3m_sde": dpmpp.sample_dpmpp_3m_sde,
    "dpmpp_3m_sde_gpu": dpmpp.sample_dpmpp_3m_sde,
    "ddpm": basic.sample_ddpm,
    "lcm": basic.sample_lcm,
    "ipndm": multistep.sample_ipndm,
    "ipndm_v": multistep.sample_ipndm_v,
    "deis": multistep.sample_deis,
    "res_multistep": multistep.sample_res_multistep,
    "res_multistep_cfg_pp": cfg_pp.sample_res_multistep_cfg_pp,
    "res_multistep_ancestral": cfg_pp.sample_res_multistep_ancestral,
    "res_multistep_ancestral_cfg_pp": cfg_pp.sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation": cfg_pp.sample_gradient_estimation,
    "gradient_estimation_cfg_pp": cfg_pp.sample_gradient_estimation_cfg_pp,
    "er_sde": sde_extra.sample_er_sde,
    "seeds_2": sde_extra.sample_seeds_2,
    "seeds_3": sde_extra.sample_seeds_3,
    "sa_solver": sde_extra.sample_sa_solver,
    "sa_solver_pece": sde_extra.sample_sa_solver_pece,
    "ddim": basic.sample_ddim,
    "uni_pc": unipc.sample_uni_pc,
    "uni_pc_bh2": unipc.sample_uni_pc_bh2,
})

SCHEDULERS: Mapping[str, Callable] = MappingProxyType({
    "simple": schedulers.simple_scheduler,
    "sgm_uniform": schedulers.sgm_uniform_scheduler,
    "karras": schedulers.karras_scheduler,
    "exponential": schedulers.exponential_scheduler,
    "ddim_uniform": schedulers.ddim_uniform_scheduler,
    "beta": schedulers.beta_scheduler,
    "normal": schedulers.normal_scheduler,
    "linear_quadratic": schedulers.linear_quadratic_scheduler,
    "kl_optimal": schedulers.kl_optimal_scheduler,
})


def sampler_names() -> List[str]:
    return list(SAMPLERS)


def scheduler_names() -> List[str]:
    return list(SCHEDULERS)


def get_sampler(name: str) -> Callable:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def get_scheduler(name: str) -> Callable:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name]
