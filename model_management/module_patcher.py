"""ComfyUI's ModelPatcher over an arbitrary torch module: what packs build around their own networks
(`ModelPatcher(control_model, load_device=..., offload_device=...)`) and hand back through `get_models()`.

Tessera's MODELs carry the full patcher interface themselves (patcher_face.py); this is the small part packs use on
other modules: the module and its devices, clones sharing the module, attachments, sizes and dtype, and moving the
module between the load and offload devices (`patch_model` / `unpatch_model`, what `load_models_gpu` asks for).
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import torch


def module_size(module: Any) -> int:
    """Bytes of a module's parameters and buffers (0 for something that is not a module)."""
    if not isinstance(module, torch.nn.Module):
        return 0
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


class ModulePatcher:
    """`model` with its `load_device` / `offload_device`; `clone()` shares the module (ComfyUI's semantics)."""

    def __init__(self, model: Any, load_device: Any = None, offload_device: Any = None, size: int = 0,
                 weight_inplace_update: bool = False) -> None:
        self.model = model
        self.load_device = torch.device(load_device) if load_device is not None else torch.device("cpu")
        self.offload_device = torch.device(offload_device) if offload_device is not None else torch.device("cpu")
        self.size = int(size) or module_size(model)
        self.weight_inplace_update = weight_inplace_update
        self.patches: dict = {}
        self.object_patches: dict = {}
        self.model_options: dict = {"transformer_options": {}}
        self.attachments: dict = {}
        self.parent: Optional["ModulePatcher"] = None

    def clone(self) -> "ModulePatcher":
        twin = copy.copy(self)
        twin.patches = {k: list(v) for k, v in self.patches.items()}
        twin.object_patches = dict(self.object_patches)
        twin.model_options = copy.deepcopy(self.model_options) if self.model_options else {}
        twin.attachments = dict(self.attachments)
        twin.parent = self
        return twin

    def is_clone(self, other: Any) -> bool:
        return getattr(other, "model", None) is self.model

    def model_size(self) -> int:
        return self.size

    def loaded_size(self) -> int:
        return self.size if self.current_device() == self.load_device else 0

    def model_dtype(self) -> Optional[torch.dtype]:
        dtype = getattr(self.model, "dtype", None)
        if isinstance(dtype, torch.dtype):
            return dtype
        first = next(iter(self.model.parameters()), None) if isinstance(self.model, torch.nn.Module) else None
        return None if first is None else first.dtype

    def current_device(self) -> Optional[torch.device]:
        if not isinstance(self.model, torch.nn.Module):
            return None
        first = next(iter(self.model.parameters()), None)
        return None if first is None else first.device

    def get_attachment(self, key: str) -> Any:
        return self.attachments.get(key)

    def set_attachments(self, key: str, attachment: Any) -> None:
        self.attachments[key] = attachment

    def remove_attachments(self, key: str) -> None:
        self.attachments.pop(key, None)

    def add_object_patch(self, name: str, obj: Any) -> None:
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        if name in self.object_patches:
            return self.object_patches[name]
        target = self.model
        for part in name.split("."):
            target = getattr(target, part)
        return target

    def patch_model(self, device_to: Any = None, *args: Any, **kwargs: Any) -> Any:
        """Put the module on `device_to` (the load device by default)."""
        if isinstance(self.model, torch.nn.Module):
            self.model.to(torch.device(device_to) if device_to is not None else self.load_device)
        return self.model

    def unpatch_model(self, device_to: Any = None, *args: Any, **kwargs: Any) -> None:
        if isinstance(self.model, torch.nn.Module) and device_to is not None:
            self.model.to(torch.device(device_to))

    def model_patches_to(self, device: Any) -> None:
        """Nothing to move: this patcher keeps no patch modules of its own."""

    def __repr__(self) -> str:
        return f"ModelPatcher({type(self.model).__name__}, load_device={self.load_device})"
