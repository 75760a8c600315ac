"""Built-in nodes, one module per domain. `builtin_specs()` collects them for the catalogue."""
from __future__ import annotations

from typing import List

from graph.node_spec import NodeSpec


BUILTIN_MODULES = (
    "primitives", "arithmetic", "image_basic", "image_io", "image_transform", "image_batch", "image_filters",
    "image_composite", "masks", "preview_any", "loaders", "lora", "hypernetwork", "text_encode", "conditioning",
    "latent", "latent_ops", "latent_io", "inpaint", "sampling", "custom_sampling", "model_patches", "model_merging",
    "controlnet", "preprocessors", "upscale",
)


def builtin_specs() -> List[NodeSpec]:
    import importlib
    specs = []
    for name in BUILTIN_MODULES:
        module = importlib.import_module(f"nodes.{name}")
        specs.extend(cls.SPEC for cls in module.NODES)
    return specs


def builtin_catalogue():
    from graph.catalogue import Catalogue
    return Catalogue(builtin_specs())


def __getattr__(name: str):
    """ComfyUI's `nodes` module names (NODE_CLASS_MAPPINGS, MAX_RESOLUTION, built-in classes such as
    `nodes.EmptyImage`) for custom node packs that `import nodes`; served by compat/comfy_nodes.py."""
    if name.startswith("_"):
        raise AttributeError(f"module 'nodes' has no attribute {name!r}")
    from compat import comfy_nodes

    return comfy_nodes.lookup(name)
