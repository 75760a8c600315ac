"""Built-in nodes, one module per domain. `builtin_specs()` collects them for the catalogue."""
from __future__ import annotations

from typing import List

from graph.node_spec import NodeSpec


def builtin_specs() -> List[NodeSpec]:
    from nodes import (arithmetic, conditioning, custom_sampling, image_basic, image_io, image_transform, latent,
                       loaders, lora, model_merging, model_patches, preview_any, primitives, sampling,
                       text_encode)
    specs = []
    for module in (primitives, arithmetic, image_basic, image_io, preview_any, loaders, lora, text_encode,
                   conditioning, latent, image_transform, sampling, custom_sampling, model_patches, model_merging):
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
