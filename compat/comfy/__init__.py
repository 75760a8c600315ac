"""`import comfy`: ComfyUI's `comfy` package as node packs use it, over Tessera's engine (one module per ComfyUI
module name: utils, model_management, samplers, sample, model_patcher, lora, ...).

`comfy.<submodule>` works after a bare `import comfy`, as it does in a running ComfyUI (where the server has
imported them all before packs load): submodules are imported on first attribute access.
"""
import importlib as _importlib


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'comfy' has no attribute {name!r}") from None
        raise
