"""ComfyUI core nodes declared with V3 dynamic inputs (Autogrow, DynamicCombo), which only the V3 schema can express: they are
written against our `comfy_api.latest` layer and compiled into the built-in catalogue at start, under ComfyUI's
module names (`comfy_extras.nodes_math`, `comfy_extras.nodes_post_processing`), before any pack loads.

- ComfyMathExpression (MathExpressionNode): an arithmetic expression over inputs named a, b, c, ... (each a FLOAT or
  an INT), evaluated safely (nodes/math_expression.py), returned as a FLOAT and an INT.
- BatchImagesNode: any number of image batches joined into one at the first's size (nodes/image_batch.py).
- ResizeImageMaskNode: an image or a mask resized by one of nine modes (a DynamicCombo; nodes/resize_modes.py).
- SaveImageAdvanced: PNG at 8 or 16 bits (nodes/png16.py), 32-bit float EXR (nodes/exr_format.py) and AVIF
  stills or animations (nodes/avif_format.py), written by nodes/advanced_save.py.
"""
from __future__ import annotations

from typing import Any

# (class name in core_v3_classes.py, ComfyUI's module of it)
CORE_V3_NODES = (("MathExpressionNode", "comfy_extras.nodes_math"),
                 ("BatchImagesNode", "comfy_extras.nodes_post_processing"),
                 ("ResizeImageMaskNode", "comfy_extras.nodes_post_processing"),
                 ("SaveImageAdvanced", "comfy_extras.nodes_images"))


def add_core_v3_nodes(catalogue: Any, services: Any) -> None:
    """Compile the V3 core nodes into `catalogue` (the compat layer installed first: their schema needs it)."""
    import compat
    compat.install(services, catalogue)
    from compat import core_v3_classes
    from compat.v3_adapter import compile_v3
    for name, module in CORE_V3_NODES:
        catalogue.add(compile_v3(getattr(core_v3_classes, name), python_module=module))
