"""Image files in and out: SaveImage, PreviewImage, LoadImage, LoadImageMask.

These keep the interfaces workflow files expect (docs/architecture.md §4.2). Every file name that comes from a prompt goes through
`Paths` (annotated_path / save_path), which resolves real paths and refuses anything that would leave its folder
(§8). IMAGE is float32 [B,H,W,C] in 0..1 and MASK float32 [B,H,W]; PNGs store clip(255*x) truncated to uint8.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from model_management.paths import PathError
from nodes.declare import Combo, Hidden, Output, Socket, String, node

# Modes Pillow uses for 16-bit (and wider integer) greyscale: their values span 0..65535, not 0..255.
WIDE_INT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Modes whose "transparency" info (palette entries or a colour key) becomes an alpha channel on convert("RGBA").
KEYED_TRANSPARENCY_MODES = frozenset({"P", "L", "RGB", "1"})
EMPTY_MASK_SIZE = 64
_LINKED = object()  # default of hook arguments: the input is linked, so its value is unknown before the run


def _paths(services: Any) -> Any:
    if services is None or getattr(services, "paths", None) is None:
        raise RuntimeError("no folders are configured for this engine (Services.paths is missing)")
    return services.paths


def _input_images(services: Any) -> List[str]:
    """Combo choices for image inputs: the input folder, read fresh on every catalogue request."""
    return services.paths.list_input_images() if services is not None else []


# -- saving ------------------------------------------------------------------------------------------------------

def _to_pil(image: torch.Tensor) -> Image.Image:
    """One [H,W,C] image in 0..1 as a PIL image (C = 1, 3 or 4)."""
    values = np.nan_to_num(image.detach().to(torch.float32).cpu().numpy(), nan=0.0)
    array = np.clip(255.0 * values, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or array.shape[-1] in (3, 4):  # Pillow infers L, RGB or RGBA from the shape
        return Image.fromarray(np.ascontiguousarray(array))
    raise ValueError(f"cannot save an image with {array.shape[-1]} channels (expected 1, 3 or 4)")


def _png_texts(prompt: Any, extra_pnginfo: Any, settings: Optional[dict]) -> Optional[dict]:
    """The workflow travels inside the PNG: `prompt` (API format) and each extra_pnginfo key (e.g. `workflow`)."""
    if settings and settings.get("disable_metadata"):
        return None
    texts = {}
    if prompt is not None:
        texts["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            texts[str(key)] = json.dumps(value)
    return texts


def _png_metadata(prompt: Any, extra_pnginfo: Any, settings: Optional[dict]) -> Optional[PngInfo]:
    texts = _png_texts(prompt, extra_pnginfo, settings)
    if texts is None:
        return None
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    return info


def _to_16_bit(image: torch.Tensor) -> np.ndarray:
    values = np.nan_to_num(image.detach().to(torch.float32).cpu().numpy(), nan=0.0)
    return np.clip(65535.0 * values, 0, 65535).astype(np.uint16)


def save_images(ctx: Any, images: torch.Tensor, filename_prefix: str, folder_type: str, compress_level: int,
                prompt: Any = None, extra_pnginfo: Any = None, bit_depth: int = 8) -> dict:
    """Write a batch as numbered PNGs (8 or 16 bits a sample) and return the ui entry listing them."""
    services = ctx.services if ctx is not None else None
    paths = _paths(services)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected an IMAGE batch [B,H,W,C], got shape {list(images.shape)}")
    height, width = int(images.shape[1]), int(images.shape[2])
    try:
        folder, base, counter, subfolder = paths.save_path(filename_prefix, folder_type, width, height)
    except PathError as exc:
        raise ValueError(f"filename_prefix {filename_prefix!r} cannot be used: {exc}; it must name a file "
                         f"inside the {folder_type} folder") from None
    settings = getattr(services, "settings", None)
    metadata = _png_metadata(prompt, extra_pnginfo, settings)
    results = []
    for index in range(images.shape[0]):
        if ctx is not None:
            ctx.check_interrupt()
        filename = f"{base}_{counter + index:05}_.png"
        if bit_depth == 16:
            from nodes.png16 import encode_png16
            data = encode_png16(_to_16_bit(images[index]), _png_texts(prompt, extra_pnginfo, settings) or {},
                                compress_level)
            with open(os.path.join(folder, filename), "wb") as handle:
                handle.write(data)
        else:
            _to_pil(images[index]).save(os.path.join(folder, filename), pnginfo=metadata,
                                        compress_level=compress_level)
        results.append({"filename": filename, "subfolder": subfolder, "type": folder_type})
    return {"ui": {"images": results}, "result": ()}


@node(category="image", display_name="Save Image", output_node=True)
class SaveImage:
    """Save images as PNG files in the output folder, with the workflow embedded so the file can be dropped back
    into the editor."""
    images = Socket("IMAGE", tooltip="The images to save.")
    filename_prefix = String("ComfyUI", tooltip="File name prefix. May contain subfolders (\"portraits/cat\") and "
                             "%width%, %height%, %year%, %month%, %day%, %hour%, %minute%, %second%.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        return save_images(ctx, images, filename_prefix, "output", 4, prompt, extra_pnginfo)


def save_preview(ctx, images, compress_level: int, prompt=None, extra_pnginfo=None, prefix: str = "ComfyUI") -> dict:
    """Images into the temp folder under a random prefix, so previews of concurrent or repeated runs never
    overwrite each other."""
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
    return save_images(ctx, images, prefix + "_temp_" + suffix, "temp", compress_level, prompt, extra_pnginfo)


@node(category="image", display_name="Image Compare", output_node=True, experimental=True)
class ImageCompare:
    """Compare two images side by side with a slider (in the official frontend's compare widget): both are kept
    as previews, listed as `a_images` and `b_images`."""
    image_a = Socket("IMAGE", optional=True, tooltip="The first image (left of the slider).")
    image_b = Socket("IMAGE", optional=True, tooltip="The second image (right of the slider).")
    compare_view = Socket("IMAGECOMPARE", optional=True, tooltip="The comparison view (a widget; nothing to connect).")

    def run(self, ctx, image_a=None, image_b=None, compare_view=None):
        result = {"a_images": [], "b_images": []}
        for key, images, prefix in (("a_images", image_a, "comfy.compare.a"), ("b_images", image_b, "comfy.compare.b")):
            if images is not None and len(images) > 0:
                result[key] = save_preview(ctx, images, 1, prefix=prefix)["ui"]["images"]
        return {"ui": result, "result": ()}


@node(category="image", display_name="Preview Image", output_node=True)
class PreviewImage:
    """Show images on the node without keeping them: they go to the temp folder, which is cleared on restart."""
    images = Socket("IMAGE", tooltip="The images to preview.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, images, prompt=None, extra_pnginfo=None):
        return save_preview(ctx, images, 1, prompt, extra_pnginfo)


@node(category="mask", display_name="Preview Mask", output_node=True)
class MaskPreview:
    """Show masks on the node as greyscale images (white = 1), kept in the temp folder like Preview Image."""
    mask = Socket("MASK", tooltip="The masks to preview.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, mask, prompt=None, extra_pnginfo=None):
        images = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1).expand(-1, -1, -1, 3)
        return save_preview(ctx, images, 4, prompt, extra_pnginfo)


@node(category="api node/image", display_name="SaveImageWebsocket", output_node=True)
class SaveImageWebsocket:
    """Send images to the client that queued the job, as PNG binary websocket frames, without writing files
    (for API clients that want the pixels straight away). It runs every time: a cached run would send nothing."""
    images = Socket("IMAGE", tooltip="The images to send.")

    def run(self, ctx, images):
        total = int(images.shape[0])
        for index in range(total):
            ctx.progress(index, total)  # as ComfyUI's node reports it: the image's index
            ctx.send_preview(_to_pil(images[index]), "PNG", None)
        return {"ui": {}, "result": ()}

    def fingerprint(self, ctx, **_):
        return float("nan")


# -- loading -----------------------------------------------------------------------------------------------------

def _upright(frame: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are stored sideways); a broken EXIF block is ignored."""
    try:
        return ImageOps.exif_transpose(frame)
    except Exception:
        return frame.copy()


def _rgb_array(frame: Image.Image) -> np.ndarray:
    """[H,W,3] float32 in 0..1; 16-bit greyscale keeps its full precision."""
    if frame.mode in WIDE_INT_MODES:
        grey = np.clip(np.asarray(frame).astype(np.float32) / 65535.0, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(frame.convert("RGB"), dtype=np.float32) / 255.0


def _alpha_array(frame: Image.Image) -> Optional[np.ndarray]:
    """[H,W] alpha in 0..1, or None when the frame is fully opaque by construction."""
    if "A" in frame.getbands():
        return np.asarray(frame.getchannel("A"), dtype=np.float32) / 255.0
    if frame.mode in KEYED_TRANSPARENCY_MODES and "transparency" in frame.info:
        return np.asarray(frame.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    return None


def _resolve(services: Any, name: str) -> str:
    return _paths(services).annotated_path(name, "input")


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_image_name(services: Any, image: Any) -> Any:
    """validate hook shared by the loaders: True, or a message (never an exception) for a bad name."""
    if image is _LINKED or services is None:
        return True  # a linked name, or no folders to check against; execution will report a clear error instead
    if not isinstance(image, str) or not image:
        return f"Invalid image file: {image}"
    try:
        path = _resolve(services, image)
    except (PathError, ValueError, OSError):
        return f"Invalid image file: {image}"
    return True if os.path.isfile(path) else f"Invalid image file: {image}"


def _fingerprint(ctx: Any, image: Any) -> Any:
    """The file's content hash: replacing or editing the file re-runs the node, touching it does not."""
    if image is _LINKED:
        return float("nan")  # a linked name: we cannot see it before the run, so always re-run
    return _file_sha256(_resolve(ctx.services, image))


def load_image_batch(path: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """All frames of the first frame's size as IMAGE [B,H,W,3], and MASK [B,H,W] = 1 - alpha."""
    images, alphas = [], []
    with Image.open(path) as img:
        # MPO (multi-picture JPEG) stores a stereo or depth companion, not animation frames.
        frames = [img] if img.format == "MPO" else ImageSequence.Iterator(img)
        size = None
        for frame in frames:
            frame = _upright(frame)
            if size is None:
                size = frame.size
            elif frame.size != size:
                continue
            images.append(_rgb_array(frame))
            alphas.append(_alpha_array(frame))
    if not images:
        raise ValueError(f"{path}: no frames could be read")
    image = torch.from_numpy(np.stack(images))
    if all(a is None for a in alphas):
        mask = torch.zeros((len(images), EMPTY_MASK_SIZE, EMPTY_MASK_SIZE), dtype=torch.float32)
    else:
        height, width = images[0].shape[:2]
        mask = torch.from_numpy(np.stack([1.0 - a if a is not None else np.zeros((height, width), np.float32)
                                          for a in alphas]))
    return image, mask


@node(category="image", display_name="Load Image",
      outputs=[Output("IMAGE", tooltip="The image, or every frame of an animation, as a batch."),
               Output("MASK", tooltip="1 - alpha (1 where the image is transparent); zeros when it has no alpha.")])
class LoadImage:
    """Load an image from the input folder (or "name [output]" / "name [temp]" from those folders). Animated and
    multi-page files load as a batch of frames; the alpha channel becomes the mask."""
    image = Combo(_input_images, image_upload=True,
                  tooltip="An image in the input folder; upload one with the button.")

    def run(self, ctx, image):
        path = _resolve(ctx.services, image)
        return load_image_batch(path)

    def fingerprint(self, ctx, image=_LINKED, **_):
        return _fingerprint(ctx, image)

    def validate(self, services, image=_LINKED):
        return _check_image_name(services, image)


def load_mask(path: str, channel: str) -> torch.Tensor:
    """One channel of the first frame as MASK [1,H,W]: the colour value, or 1 - alpha for "alpha"."""
    with Image.open(path) as img:
        frame = _upright(img)
    if channel == "alpha":
        alpha = _alpha_array(frame)
        if alpha is None:
            return torch.zeros((1, EMPTY_MASK_SIZE, EMPTY_MASK_SIZE), dtype=torch.float32)
        return torch.from_numpy(1.0 - alpha).unsqueeze(0)
    index = {"red": 0, "green": 1, "blue": 2}[channel]
    return torch.from_numpy(np.ascontiguousarray(_rgb_array(frame)[..., index])).unsqueeze(0)


@node(category="mask", display_name="Load Image (as Mask)",
      outputs=[Output("MASK", tooltip="The chosen channel as a mask [1,H,W].")])
class LoadImageMask:
    """Load one channel of an image from the input folder as a mask. For "alpha" the mask is 1 - alpha, so
    transparent areas are masked in; a colour channel is used as it is."""
    image = Combo(_input_images, image_upload=True,
                  tooltip="An image in the input folder; upload one with the button.")
    channel = Combo(["alpha", "red", "green", "blue"], tooltip="Which channel becomes the mask.")

    def run(self, ctx, image, channel="alpha"):
        return (load_mask(_resolve(ctx.services, image), channel),)

    def fingerprint(self, ctx, image=_LINKED, **_):
        return _fingerprint(ctx, image)

    def validate(self, services, image=_LINKED):
        return _check_image_name(services, image)


NODES = [SaveImage, PreviewImage, MaskPreview, ImageCompare, SaveImageWebsocket, LoadImage, LoadImageMask]
