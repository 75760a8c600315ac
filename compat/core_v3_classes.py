"""The V3 classes of compat/core_v3_nodes.py (imported once the compat layer is installed: `comfy_api.latest` is a
top-level module name packs share)."""
from __future__ import annotations

import math
import string
from typing import Any

from comfy_api.latest import io

from nodes.image_batch import batch_images, check_image
from nodes.math_expression import evaluate


class MathExpressionNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        values = io.Autogrow.TemplateNames(input=io.MultiType.Input("value", [io.Float, io.Int]),
                                           names=list(string.ascii_lowercase), min=1)
        return io.Schema(
            node_id="ComfyMathExpression", display_name="Math Expression", category="logic",
            search_aliases=["expression", "formula", "calculate", "calculator", "eval", "math"],
            description="Evaluate an arithmetic expression over the inputs (a, b, c, ...; `values` lists them): "
                        "+ - * / // % **, comparisons, `x if c else y`, and sum, min, max, abs, round, pow, sqrt, "
                        "ceil, floor, log, log2, log10, sin, cos, tan, int, float.",
            inputs=[io.String.Input("expression", default="a + b", multiline=True,
                                    tooltip="The expression, e.g. a * 2 + b or round(a / 8) * 8."),
                    io.Autogrow.Input("values", template=values, tooltip="The numbers it uses: a, b, c, ...")],
            outputs=[io.Float.Output(display_name="FLOAT", tooltip="The result."),
                     io.Int.Output(display_name="INT", tooltip="The result as an integer (truncated).")],
        )

    @classmethod
    def execute(cls, expression: str, values: Any = None) -> io.NodeOutput:
        if not expression.strip():
            raise ValueError("Expression cannot be empty.")
        names = dict(values or {})
        names["values"] = list((values or {}).values())
        result = evaluate(expression, names)
        if isinstance(result, bool) or not isinstance(result, (int, float)):
            raise ValueError(f"Math Expression '{expression}' must evaluate to a numeric result, got "
                             f"{type(result).__name__}: {result!r}")
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError(f"Math Expression '{expression}' evaluated to {result}")
        return io.NodeOutput(float(result), int(result))


class BatchImagesNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        images = io.Autogrow.TemplatePrefix(io.Image.Input("image"), prefix="image", min=2, max=50)
        return io.Schema(
            node_id="BatchImagesNode", display_name="Batch Images", category="image",
            search_aliases=["batch", "image batch", "batch images", "combine images", "merge images", "stack images"],
            description="Join image batches into one, in input order, at the first batch's size (the others "
                        "centre-cropped and rescaled bilinearly).",
            inputs=[io.Autogrow.Input("images", template=images, tooltip="The image batches, in order.")],
            outputs=[io.Image.Output(tooltip="All the images in one batch.")],
        )

    @classmethod
    def execute(cls, images: Any) -> io.NodeOutput:
        batches = [check_image(image, name) for name, image in (images or {}).items()]
        if not batches:
            raise ValueError("BatchImagesNode needs at least one image input")
        return io.NodeOutput(batch_images(batches))
