"""`comfy.cli_args`: `args` with ComfyUI's option names, as packs read them (`args.cpu`, `args.preview_method`,
`args.disable_smart_memory`, ...), filled from the running server's settings; LatentPreviewMethod.

Values packs can read but Tessera does not have as flags hold ComfyUI's defaults.
"""
from __future__ import annotations

import enum
import types
from typing import Any


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"
    AutoTune = "autotune"


_DEFAULTS = {
    "listen": "127.0.0.1", "port": 8188, "cpu": False, "preview_method": LatentPreviewMethod.NoPreviews,
    "preview_size": 512, "disable_smart_memory": False, "lowvram": False, "novram": False, "highvram": False,
    "gpu_only": False, "normalvram": False, "force_fp32": False, "force_fp16": False, "fp32_unet": False,
    "bf16_unet": False, "fp16_unet": False, "fp8_e4m3fn_unet": False, "fp8_e5m2_unet": False, "fp16_vae": False,
    "fp32_vae": False, "bf16_vae": False, "cpu_vae": False, "fp8_e4m3fn_text_enc": False, "fp8_e5m2_text_enc": False,
    "fp16_text_enc": False, "fp32_text_enc": False, "bf16_text_enc": False, "use_split_cross_attention": False,
    "use_quad_cross_attention": False, "use_pytorch_cross_attention": True, "use_sage_attention": False,
    "use_flash_attention": False, "disable_xformers": True, "dont_upcast_attention": False,
    "disable_metadata": False, "disable_all_custom_nodes": False, "multi_user": False, "verbose": "INFO",
    "deterministic": False, "fast": set(), "reserve_vram": None, "cache_lru": 0, "cache_classic": True,
    "cache_none": False, "output_directory": None, "input_directory": None, "temp_directory": None,
    "user_directory": None, "base_directory": None, "extra_model_paths_config": [], "front_end_version": None,
    "front_end_root": None, "dont_print_server": False, "quick_test_for_ci": False, "windows_standalone_build": False,
    "enable_cors_header": None, "max_upload_size": 100.0, "auto_launch": False, "cuda_device": None,
    "directml": None, "disable_ipex_optimize": False, "mmap_torch_files": False, "disable_mmap": False,
    "supports_fp8_compute": False, "async_offload": False, "default_hashing_function": "sha256",
    "enable_compress_response_body": False, "comfy_api_base": "https://api.comfy.org", "database_url": None,
    "whitelist_custom_nodes": [], "disable_api_nodes": True, "log_stdout": False,
}


class _Args(types.SimpleNamespace):
    """Attribute access reads the bound server's settings first (cpu, preview_method, ...)."""

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_"):
            from compat import _runtime
            services = _runtime.state.services
            settings = getattr(services, "settings", None) or {}
            if name == "cpu" and "cpu" in settings:
                return bool(settings["cpu"])
            if name in (settings.get("precision") or {}):  # --force-fp32, --bf16-unet, ...
                return bool(settings["precision"][name])
            if name == "preview_method" and "preview_method" in settings:
                try:
                    return LatentPreviewMethod(settings["preview_method"])
                except ValueError:
                    return LatentPreviewMethod.NoPreviews
        return super().__getattribute__(name)


args = _Args(**_DEFAULTS)
