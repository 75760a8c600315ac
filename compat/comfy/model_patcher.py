"""`comfy.model_patcher`: ModelPatcher is our MODEL, which carries ComfyUI's patcher interface
(model_management/patcher_face.py)."""
from model_management.model_objects import DiffusionModel as ModelPatcher  # noqa: F401
from model_management.patcher_face import copy_options as create_model_options_clone  # noqa: F401


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
