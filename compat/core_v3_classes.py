"""The V3 classes of compat/core_v3_nodes.py (imported once the compat layer is installed: `comfy_api.latest` is a
top-level module name packs share)."""
from __future__ import annotations

import math
import string
from typing import Any

from comfy_api.latest import io

from nodes.image_batch import batch_images, check_image
from nodes.advanced_save import save_advanced
from nodes.math_expression import evaluate
from nodes.resize_modes import CROP_METHODS, RESIZE_TYPES, SCALE_METHODS, resize

MAX_RESOLUTION = 16384


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


class ResizeImageMaskNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.MatchType.Template("input_type", [io.Image, io.Mask])

        def crop() -> Any:
            return io.Combo.Input("crop", options=CROP_METHODS, default="center",
                                  tooltip="disabled stretches to the new shape; center crops to its aspect ratio first.")

        def side(name: str, tip: str) -> Any:
            return io.Int.Input(name, default=512, min=0, max=MAX_RESOLUTION, step=1, tooltip=tip)
        options = {
            "scale dimensions": [side("width", "Target width (0: from the height, aspect kept)."),
                                 side("height", "Target height (0: from the width, aspect kept)."), crop()],
            "scale by multiplier": [io.Float.Input("multiplier", default=1.0, min=0.01, max=8.0, step=0.01,
                                                   tooltip="Scale factor (2 doubles, 0.5 halves).")],
            "scale longer dimension": [side("longer_size", "The longer side's new length; aspect kept.")],
            "scale shorter dimension": [side("shorter_size", "The shorter side's new length; aspect kept.")],
            "scale width": [side("width", "Target width; the height follows the aspect ratio.")],
            "scale height": [side("height", "Target height; the width follows the aspect ratio.")],
            "scale total pixels": [io.Float.Input("megapixels", default=1.0, min=0.01, max=16.0, step=0.01,
                                                  tooltip="Target size in megapixels (1.0 is about 1024x1024).")],
            "match size": [io.MultiType.Input("match", [io.Image, io.Mask], tooltip="Take this image's or mask's "
                                              "size."), crop()],
            "scale to multiple": [io.Int.Input("multiple", default=8, min=1, max=MAX_RESOLUTION, step=1,
                                               tooltip="Make both sides divisible by this (scaled to cover, then "
                                                       "centre-cropped).")],
        }
        return io.Schema(
            node_id="ResizeImageMaskNode", display_name="Resize Image/Mask", category="transform",
            description="Resize an image or a mask: to given dimensions, by a factor, by one side, to a number of "
                        "pixels, to another image's size, or to a multiple.",
            search_aliases=["resize", "resize image", "resize mask", "scale", "scale image", "scale mask",
                            "image resize", "change size", "dimensions", "shrink", "enlarge"],
            inputs=[io.MatchType.Input("input", template=template, tooltip="The image or mask to resize."),
                    io.DynamicCombo.Input("resize_type", options=[io.DynamicCombo.Option(key, options[key])
                                                                  for key in RESIZE_TYPES],
                                          tooltip="How to choose the new size."),
                    io.Combo.Input("scale_method", options=SCALE_METHODS, default="area",
                                   tooltip="Resampling: area for shrinking, lanczos for enlarging, nearest-exact "
                                           "for pixel art.")],
            outputs=[io.MatchType.Output(template=template, display_name="resized", tooltip="The resized input.")],
        )

    @classmethod
    def execute(cls, input: Any, scale_method: str, resize_type: dict) -> io.NodeOutput:
        options = dict(resize_type)
        kind = options.pop("resize_type")
        return io.NodeOutput(resize(input, kind, options, scale_method, options.get("match")))


class SaveImageAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        png = io.DynamicCombo.Option("png", [
            io.Combo.Input("bit_depth", options=["8-bit", "16-bit"], default="8-bit", advanced=True,
                           tooltip="8 or 16 bits a sample (16-bit keeps smooth gradients for editing)."),
            io.Combo.Input("input_color_space", options=["sRGB"], default="sRGB", advanced=True,
                           tooltip="The images' colour space (written as is)."),
        ])
        exr = io.DynamicCombo.Option("exr", [
            io.Combo.Input("bit_depth", options=["32-bit float"], default="32-bit float", advanced=True,
                           tooltip="EXR is written as 32-bit float."),
            io.Combo.Input("input_color_space", options=["sRGB", "HDR", "linear"], default="sRGB", advanced=True,
                           tooltip="What the images hold; the EXR is always scene-linear. sRGB: sRGB-encoded "
                                   "Rec.709 (the sRGB curve is undone); HDR: HLG-encoded Rec.2020 (BT.2100's "
                                   "inverse HLG OETF); linear: already linear Rec.709, written unchanged."),
        ])
        avif = io.DynamicCombo.Option("avif", [
            io.Combo.Input("bit_depth", options=["auto", "8-bit YUV420", "10-bit YUV420"], default="auto",
                           advanced=True, tooltip="auto: 8-bit YUV420 for sRGB, 10-bit YUV420 for HDR."),
            io.Combo.Input("input_color_space", options=["sRGB", "HDR", "HDR PQ"], default="sRGB", advanced=True,
                           tooltip="The images' colour space: sRGB, HDR (BT.2020 HLG) or HDR PQ (BT.2020 PQ)."),
            io.Int.Input("crf", default=18, min=1, max=63, advanced=True,
                         tooltip="AV1 constant rate factor: lower is higher quality and a larger file."),
            io.DynamicCombo.Input("save_mode", display_name="save mode", options=[
                io.DynamicCombo.Option("still images", []),
                io.DynamicCombo.Option("animated", [
                    io.Float.Input("fps", default=6.0, min=0.01, max=1000.0, step=0.01,
                                   tooltip="Frames per second of the animation."),
                    io.Int.Input("loop_count", default=0, min=0, max=1000, advanced=True,
                                 tooltip="How many times the animation loops; 0 loops forever."),
                ]),
            ], tooltip="One file per image, or the whole batch as one animated file."),
        ])
        return io.Schema(
            node_id="SaveImageAdvanced", display_name="Save Image (Advanced)", category="image",
            search_aliases=["save", "save image", "export image", "output image", "write image"],
            description="Save images in the output folder as PNG (8 or 16 bits), EXR (32-bit float, scene-linear) "
                        "or AVIF (AV1, 8 or 10 bits, stills or an animation), with the workflow embedded.",
            inputs=[io.Image.Input("images", tooltip="The images to save."),
                    io.String.Input("filename_prefix", default="ComfyUI",
                                    tooltip="File name prefix; may contain subfolders, %batch_num% and "
                                            "%width%, %date%-style tokens."),
                    io.DynamicCombo.Input("format", options=[png, exr, avif], tooltip="The file format.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
            outputs=[io.Image.Output(display_name="images", tooltip="The images, passed on.")],
        )

    @classmethod
    def execute(cls, images: Any, filename_prefix: str, format: dict) -> io.NodeOutput:
        from compat import _runtime
        ui = save_advanced(_runtime.state.services, images, filename_prefix, dict(format), cls.hidden.prompt,
                           cls.hidden.extra_pnginfo)
        return io.NodeOutput(images, ui=ui)
