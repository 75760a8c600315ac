"""Built-in nodes, one module per domain. `builtin_specs()` collects them for the catalogue."""
from __future__ import annotations

from typing import List

from graph.node_spec import NodeSpec


BUILTIN_MODULES = (
    "primitives", "arithmetic", "image_basic", "image_io", "image_transform", "image_batch", "image_filters",
    "image_composite", "image_stitch", "masks", "preview_any", "loaders", "lora", "hypernetwork", "text_encode",
    "conditioning", "latent", "latent_ops", "latent_io", "inpaint", "sampling", "custom_sampling", "model_patches",
    "model_merging", "controlnet", "preprocessors", "upscale", "perp_neg", "gits", "clip_vision", "logic",
    "skip_layer_guidance", "style_model",
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


# ComfyUI's `nodes` module names (NODE_CLASS_MAPPINGS, MAX_RESOLUTION, built-in classes such as `nodes.EmptyImage`)
# reach packs that `import nodes` through a module `__getattr__` that `compat.install()` sets on this package:
# the compat layer sits above the nodes and reaches down, never the other way.
