"""The device attributes ComfyUI's model objects share (CLIP, VAE, CLIP_VISION, and MODEL's load_device): where
the weights run and where they rest. Ours move through the residency manager; these are its answers, read-only.
"""
from __future__ import annotations

import torch


class DeviceFace:
    """Mixin: needs `device` and `make_resident()` from the class."""

    @property
    def load_device(self) -> torch.device:
        return self.device

    @property
    def offload_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def patcher(self) -> "DeviceFace":
        """ComfyUI's ModelPatcher holding the weights; here the object itself (load_device, offload_device)."""
        return self

    def load_model(self) -> "DeviceFace":
        """Make the weights resident on the compute device (ComfyUI's `load_model`)."""
        self.make_resident()
        return self
