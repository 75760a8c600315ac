"""`comfy.model_patcher`: our MODEL carries ComfyUI's patcher interface itself (model_management/patcher_face.py);
`ModelPatcher(module, load_device=..., offload_device=...)` wraps any other module the way packs build them
(model_management/module_patcher.py), and `isinstance(model, ModelPatcher)` holds for both."""
from model_management.model_objects import DiffusionModel
from model_management.module_patcher import ModulePatcher
from model_management.patcher_face import copy_options as create_model_options_clone  # noqa: F401


class _PatcherKind(type):
    def __instancecheck__(cls, obj) -> bool:
        return type.__instancecheck__(cls, obj) or (cls is ModelPatcher and isinstance(obj, DiffusionModel))


class ModelPatcher(ModulePatcher, metaclass=_PatcherKind):
    """A patcher around a pack's module; Tessera's MODELs also count as ModelPatchers."""


def set_model_options_patch_replace(model_options: dict, patch, name: str, block_name: str, number: int,
                                    transformer_index=None) -> dict:
    """The module-level form of set_model_patch_replace, on a model_options dict."""
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    to = model_options.setdefault("transformer_options", {})
    to.setdefault("patches_replace", {}).setdefault(name, {})[key] = patch
    return model_options


def set_model_options_post_cfg_function(model_options: dict, post_cfg_function, disable_cfg1_optimization=False):
    model_options.setdefault("sampler_post_cfg_function", []).append(post_cfg_function)
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict, pre_cfg_function, disable_cfg1_optimization=False):
    model_options.setdefault("sampler_pre_cfg_function", []).append(pre_cfg_function)
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options
