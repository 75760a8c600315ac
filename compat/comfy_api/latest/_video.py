"""The video value types of `comfy_api.latest` (Types.VideoContainer, VideoCodec, VideoComponents; InputImpl's
VideoFromComponents), as far as packs declare and build them. Encoding a video needs PyAV, which Tessera does not
ship: `save_to` says so instead of writing a broken file."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional

import torch


class VideoContainer(str, enum.Enum):
    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def as_input(cls) -> list:
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: Any) -> str:
        value = cls(value)
        return "mp4" if value in (cls.MP4, cls.AUTO) else value.value


class VideoCodec(str, enum.Enum):
    AUTO = "auto"
    H264 = "h264"

    @classmethod
    def as_input(cls) -> list:
        return [member.value for member in cls]


@dataclass
class VideoComponents:
    images: torch.Tensor
    audio: Optional[dict] = None
    frame_rate: Fraction = Fraction(24)
    metadata: Optional[dict] = None


class VideoInput:
    """A video value: its frames and sound."""

    def get_components(self) -> VideoComponents:
        raise NotImplementedError

    def get_dimensions(self) -> tuple:
        frames = self.get_components().images
        return int(frames.shape[2]), int(frames.shape[1])

    def save_to(self, path: str, format: Any = VideoContainer.AUTO, codec: Any = VideoCodec.AUTO,
                metadata: Optional[dict] = None) -> None:
        raise NotImplementedError("writing video files needs PyAV, which Tessera does not ship")


class VideoFromComponents(VideoInput):
    def __init__(self, components: VideoComponents):
        self._components = components

    def get_components(self) -> VideoComponents:
        return self._components
