"""`comfy_api.latest.ui`: what a V3 node shows on itself, returned as `io.NodeOutput(..., ui=ui.PreviewImage(x))`.

Images are written with the engine's own saver (nodes/image_io.save_images: numbered PNGs, the workflow embedded
from the node's hidden PROMPT / EXTRA_PNGINFO, `cls=` passing the node class that holds them).
"""
from __future__ import annotations

import secrets
import string
from typing import Any, List, Optional

import torch

from comfy_api.latest._io import FolderType, _UIOutput
from compat import _runtime
from execution.context import current_context, detached_context
from nodes.image_io import save_images


class SavedResult(dict):
    """One written file as the editor addresses it: {"filename", "subfolder", "type"}."""

    def __init__(self, filename: str, subfolder: str, type: Any):
        super().__init__(filename=filename, subfolder=subfolder, type=getattr(type, "value", type))

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> str:
        return self["type"]


def _hidden(cls: Any, name: str) -> Any:
    holder = getattr(cls, "hidden", None) if cls is not None else None
    return getattr(holder, name, None) if holder is not None else None


class ImageSaveHelper:
    @staticmethod
    def save_images(images: torch.Tensor, filename_prefix: str, folder_type: Any, cls: Any = None,
                    compress_level: int = 4) -> List[SavedResult]:
        folder = getattr(folder_type, "value", folder_type)
        ctx = current_context() or detached_context(_runtime.state.services, "ui")
        written = save_images(ctx, images, filename_prefix, folder, compress_level,
                              _hidden(cls, "prompt"), _hidden(cls, "extra_pnginfo"))
        return [SavedResult(r["filename"], r["subfolder"], r["type"]) for r in written["ui"]["images"]]

    @staticmethod
    def get_save_images_ui(images: torch.Tensor, filename_prefix: str, cls: Any = None,
                           compress_level: int = 4) -> "SavedImages":
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix, FolderType.output, cls,
                                                       compress_level))


class SavedImages(_UIOutput):
    def __init__(self, results: List[SavedResult], is_animated: bool = False):
        self.results = list(results)
        self.is_animated = is_animated

    def as_dict(self) -> dict:
        data: dict = {"images": self.results}
        if self.is_animated:
            data["animated"] = (True,)
        return data


class PreviewImage(_UIOutput):
    """Show an IMAGE batch on the node (written to the temp folder, cleared on restart)."""

    def __init__(self, image: torch.Tensor, animated: bool = False, cls: Any = None, **_: Any):
        prefix = "ComfyUI_temp_" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(5))
        self.values = ImageSaveHelper.save_images(image, prefix, FolderType.temp, cls, compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """Show a MASK batch, as grey images."""

    def __init__(self, mask: torch.Tensor, animated: bool = False, cls: Any = None, **kwargs: Any):
        grey = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(grey, animated, cls, **kwargs)


class PreviewText(_UIOutput):
    def __init__(self, value: str, **_: Any):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}


class PreviewVideo(_UIOutput):
    def __init__(self, values: list, **_: Any):
        self.values = list(values)

    def as_dict(self) -> dict:
        return {"images": self.values, "animated": (True,)}


class PreviewAudio(_UIOutput):
    """Audio previews need an audio encoder, which Tessera does not ship: creating one says so."""

    def __init__(self, audio: Optional[dict] = None, cls: Any = None, **_: Any):
        raise NotImplementedError("audio previews are not supported by Tessera (no audio encoder is installed)")

    def as_dict(self) -> dict:  # pragma: no cover - never constructed
        return {}


__all__ = ["SavedResult", "SavedImages", "ImageSaveHelper", "PreviewImage", "PreviewMask", "PreviewText",
           "PreviewVideo", "PreviewAudio"]
