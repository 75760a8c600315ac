"""CLIP vision nodes: load an image encoder, encode images with it, and attach the result to conditioning for
unCLIP models. IPAdapter packs take CLIP_VISION / CLIP_VISION_OUTPUT from these."""
from __future__ import annotations

from nodes.declare import Combo, Float, Output, Socket, node
from nodes.loaders import files


@node(category="loaders", display_name="Load CLIP Vision",
      outputs=[Output("CLIP_VISION", tooltip="The image encoder.")])
class CLIPVisionLoader:
    """Load a CLIP vision model (OpenAI ViT-L/14, LAION ViT-H/14 or ViT-bigG/14; transformers or OpenCLIP layout)."""
    clip_name = Combo(files("clip_vision"), tooltip="The CLIP vision file (models/clip_vision).")

    def run(self, ctx, clip_name):
        from model_management.clip_vision_files import load_clip_vision
        path = ctx.services.paths.require("clip_vision", clip_name)
        try:
            return (load_clip_vision(path, getattr(ctx.services, "models", None)),)
        except ValueError as exc:
            raise ValueError(f"clip_name: {exc}") from exc


@node(category="conditioning", display_name="CLIP Vision Encode",
      outputs=[Output("CLIP_VISION_OUTPUT", tooltip="Hidden states and image embedding of each image.")])
class CLIPVisionEncode:
    """Encode images with a CLIP vision model, as CLIP saw images in training: resized, cropped, normalised."""
    clip_vision = Socket("CLIP_VISION", tooltip="The image encoder.")
    image = Socket("IMAGE", tooltip="The images to encode.")
    crop = Combo(["center", "none"], tooltip="center: scale the short side and crop the middle square; none: "
                 "squash the whole image into the square.")

    def run(self, ctx, clip_vision, image, crop):
        if not callable(getattr(clip_vision, "encode_image", None)):
            raise ValueError(f"clip_vision: expected a CLIP_VISION (from Load CLIP Vision), got "
                             f"{type(clip_vision).__name__}")
        return (clip_vision.encode_image(image, crop=crop == "center"),)


@node(category="conditioning", display_name="unCLIPConditioning",
      outputs=[Output("CONDITIONING", tooltip="The conditioning with the image added (read by unCLIP models).")])
class unCLIPConditioning:  # noqa: N801 - ComfyUI's node name
    """Add an encoded image to conditioning. SDXL base and refiner take its image embedding, noise-augmented, in
    place of the pooled text embedding ("revision": diffusion/sampling/unclip.py); models without an image input
    ignore it, as in ComfyUI."""
    conditioning = Socket("CONDITIONING", tooltip="The conditioning to extend.")
    clip_vision_output = Socket("CLIP_VISION_OUTPUT", tooltip="From CLIP Vision Encode.")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01, tooltip="How strongly the image guides; 0 leaves the "
                     "conditioning unchanged.")
    noise_augmentation = Float(0.0, min=0.0, max=1.0, step=0.01, tooltip="Noise added to the image embedding: "
                               "higher values follow the image more loosely.")

    def run(self, ctx, conditioning, clip_vision_output, strength, noise_augmentation):
        if strength == 0:
            return (conditioning,)
        extra = {"clip_vision_output": clip_vision_output, "strength": strength,
                 "noise_augmentation": noise_augmentation}
        out = []
        for tensor, options in conditioning:
            updated = dict(options)
            updated["unclip_conditioning"] = list(options.get("unclip_conditioning") or []) + [extra]
            out.append([tensor, updated])
        return (out,)


NODES = [CLIPVisionLoader, CLIPVisionEncode, unCLIPConditioning]
