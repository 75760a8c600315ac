"""`comfy.comfy_types`: typing helpers for V1 node classes (see node_typing)."""
from comfy.comfy_types.node_typing import (IO, CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict,
                                           InputTypeOptions, UnetApplyFunction, UnetParams, UnetWrapperFunction)

__all__ = ["IO", "CheckLazyMixin", "ComfyNodeABC", "FileLocator", "InputTypeDict", "InputTypeOptions",
           "UnetApplyFunction", "UnetParams", "UnetWrapperFunction"]
