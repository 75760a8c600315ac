"""Model upscaling nodes: load an upscale model (any architecture spandrel detects) and upscale images in tiles.

The loaded model travels on the UPSCALE_MODEL socket; the output cache keeps it per file (the loader's fingerprint
is the file's size and modification time, so a replaced file is read again). With a model manager
(`ctx.services.models`) the weights are owned by it: read once for every workflow, counted in its RAM budget,
evicted least recently used and read again when used after that; the upscale node then runs the network where the
manager's device loader places it. The work is in model_management/upscaling.py.
"""
from __future__ import annotations

import os

from nodes.declare import Combo, Output, Socket, node
from nodes.loaders import files


def _models(ctx):
    return getattr(ctx.services, "models", None) if ctx.services is not None else None


def _device(ctx):
    """The engine's compute device when the model manager names one, else the module's default (a model the
    manager owns always runs where its device loader puts it)."""
    return getattr(_models(ctx), "device", None)


@node(category="loaders", display_name="Load Upscale Model",
      outputs=[Output("UPSCALE_MODEL", tooltip="The upscale model, for Upscale Image (using Model).")])
class UpscaleModelLoader:
    """Load a super-resolution or restoration model (ESRGAN, Real-ESRGAN, Compact, SwinIR, SPAN, ...); the
    architecture and scale are detected from the weights. Pickle files are loaded only if they hold plain weights."""
    model_name = Combo(files("upscale_models"), tooltip="The model file (models/upscale_models).")

    def fingerprint(self, ctx, model_name):
        path = ctx.services.paths.require("upscale_models", model_name)
        st = os.stat(path)
        return (os.path.realpath(path), st.st_size, st.st_mtime_ns)

    def run(self, ctx, model_name):
        from model_management.upscaling import load_resident_upscale_model, load_upscale_model
        try:
            path = ctx.services.paths.require("upscale_models", model_name)
        except FileNotFoundError as exc:
            raise ValueError(f"model_name: {exc}") from None
        models = _models(ctx)
        if models is None:
            return (load_upscale_model(path),)
        return (load_resident_upscale_model(models, path),)


@node(category="image/upscaling", display_name="Upscale Image (using Model)",
      outputs=[Output("IMAGE", tooltip="The images, larger by the model's scale (4x models: 4 times the width "
                                       "and height).")])
class ImageUpscaleWithModel:
    """Upscale images with an upscale model. The image is processed in overlapping tiles, sized to the free memory
    and blended so no seams show; an alpha channel is resized alongside."""
    upscale_model = Socket("UPSCALE_MODEL", tooltip="The model from Load Upscale Model.")
    image = Socket("IMAGE", tooltip="The images to upscale.")

    def run(self, ctx, upscale_model, image):
        from model_management.upscaling import UpscaleModel, upscale_image
        if not isinstance(upscale_model, UpscaleModel):
            raise ValueError(f"upscale_model: expected an UPSCALE_MODEL from Load Upscale Model, got "
                             f"{type(upscale_model).__name__}")
        if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"image: expected [batch, height, width, 3 or 4 channels], got shape "
                             f"{tuple(image.shape)}")
        out = upscale_image(upscale_model, image, device=_device(ctx),
                            progress=lambda done, total: ctx.progress(done, total),
                            check_interrupt=ctx.check_interrupt)
        return (out,)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]
