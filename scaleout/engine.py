"""One engine from the command line: services (folders, model residency, devices, precision), the catalogue (built-in
nodes, core V3 nodes, custom packs) and the output cache policy. The server builds one; with scale-out every worker
builds its own from the front's arguments, so both run the same nodes on the same paths config."""
from __future__ import annotations

import argparse
import logging

from execution.caches import make_cache
from model_management.paths import Paths
from model_management.services import Services
from nodes import builtin_catalogue

log = logging.getLogger("tessera")


def cache_from(args: argparse.Namespace):
    if args.cache_lru is not None and args.cache_lru > 0:  # as in ComfyUI, 0 (or less) keeps the classic cache
        return make_cache("lru", lru_size=args.cache_lru)
    if args.cache_ram is not None:
        from model_management.host_memory import available_bytes
        return make_cache("ram", ram_headroom_gb=args.cache_ram, available_ram=available_bytes)
    if args.cache_none:
        return make_cache("none")
    return make_cache("classic")


def precision_flag_values(args: argparse.Namespace) -> dict:
    """The precision flags as comfy.cli_args names them (force_fp32, bf16_unet, fp32_text_enc, ...)."""
    names = ["force_fp32", "force_fp16"] + [f"{d}_{k}" for k in ("unet", "vae", "text_enc")
                                             for d in ("fp32", "bf16", "fp16")]
    return {name: bool(getattr(args, name, False)) for name in names}


def services_from(args: argparse.Namespace) -> Services:
    paths = Paths(args.base_directory, args.output_directory, args.input_directory, args.temp_directory,
                  args.user_directory)
    for yaml_path in args.extra_model_paths_config:
        paths.load_model_paths_yaml(yaml_path)
    from model_management.device_loading import DeviceLoader
    from model_management.devices import device_from_flags
    from model_management.residency import ModelResidency, default_ram_budget
    budget = int(args.ram_budget * (1 << 30)) if args.ram_budget is not None else default_ram_budget()
    from model_management.precision_policy import PrecisionFlags
    compute = device_from_flags(args.cpu, args.vram_mode, args.reserve_vram, args.simulate_vram,
                                PrecisionFlags.from_args(args))
    log.info("precision: %s", compute.precision.summary())
    return Services(paths, settings={"cpu": args.cpu, "preview_method": args.preview_method,
                                     "vram_mode": compute.mode.value, "precision": precision_flag_values(args)},
                    models=ModelResidency(budget, DeviceLoader(compute), keep_alive=args.keep_alive))


def load_catalogue(args: argparse.Namespace, services: Services) -> tuple:
    catalogue = builtin_catalogue()
    packs: list = []
    try:
        from compat.core_v3_nodes import add_core_v3_nodes
        from compat.packs import load_packs
    except ImportError:  # pack loading is optional in stripped-down installs
        return catalogue, packs
    add_core_v3_nodes(catalogue, services)  # core nodes only the V3 schema can declare (dynamic inputs)
    packs = load_packs(services.paths.custom_node_dirs, catalogue, services,
                       disabled=args.disable_all_custom_nodes)
    for pack in packs:
        if not pack.ok:
            log.warning("custom node pack %s failed to load (skipped)", pack.name)
    return catalogue, packs
