"""`comfy.hooks`: ComfyUI's hook classes (model_management/hooks.py; transformer_options / wrapper hooks run)."""
from model_management.hooks import (AdditionalModelsHook, EnumHookMode, EnumHookScope, EnumHookType,  # noqa: F401
                                    EnumWeightTarget, Hook, HookGroup, InjectionsHook, ObjectPatchHook,
                                    TransformerOptionsHook, WeightHook, WrapperHook, create_target_dict,
                                    default_should_register)
