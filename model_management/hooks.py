"""ComfyUI's hooks: objects attached to conditioning or to a control (`control.extra_hooks`) that change a sampler run.

Supported kind: transformer-options hooks (`TransformerOptionsHook`, alias `WrapperHook`), which carry wrappers,
callbacks and patches in a transformer_options-shaped dict. At the start of a run every such hook found on the
controls of the conditioning (each hook once, by identity of its reference) is asked `should_register(...)` and,
if it agrees, its dict is merged into the run's model_options["transformer_options"] -- the same run-local clone
OUTER_SAMPLE wrappers get (model_management/outer_sample.py) -- so an OUTER_SAMPLE wrapper a hook brings wraps that
run. Weight hooks (LoRA scheduled on conditioning), object-patch, additional-model and injection hooks exist as
classes, but registering one raises NotImplementedError naming the kind: Tessera does not run them yet.
"""
from __future__ import annotations

import enum
from typing import Any, Callable, Dict, Iterable, List, Optional

from model_management.patcher_extension import merge_nested_dicts


class EnumHookMode(enum.Enum):
    MinVram = "minvram"
    MaxSpeed = "maxspeed"


class EnumHookType(enum.Enum):
    Weight = "weight"
    ObjectPatch = "object_patch"
    AdditionalModels = "add_models"
    TransformerOptions = "transformer_options"
    Injections = "add_injections"


class EnumWeightTarget(enum.Enum):
    Model = "model"
    Clip = "clip"


class EnumHookScope(enum.Enum):
    AllConditioning = "all_conditioning"
    HookedOnly = "hooked_only"


class _HookRef:
    """Identity shared by a hook and its clones."""


def default_should_register(hook: "Hook", model: Any, model_options: dict, target_dict: dict,
                            registered: "HookGroup") -> bool:
    return True


def create_target_dict(target: Optional[EnumWeightTarget] = None, **kwargs: Any) -> dict:
    out = {} if target is None else {"target": target}
    out.update(kwargs)
    return out


class Hook:
    def __init__(self, hook_type: Optional[EnumHookType] = None, hook_ref: Optional[_HookRef] = None,
                 hook_id: Optional[str] = None, hook_keyframe: Any = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        self.hook_type = hook_type
        self.hook_ref = hook_ref if hook_ref is not None else _HookRef()
        self.hook_id = hook_id
        self.hook_keyframe = hook_keyframe
        self.hook_scope = hook_scope
        self.custom_should_register: Callable = default_should_register

    def clone(self) -> "Hook":
        c = self.__class__()
        c.hook_type, c.hook_ref, c.hook_id = self.hook_type, self.hook_ref, self.hook_id
        c.hook_keyframe, c.hook_scope = self.hook_keyframe, self.hook_scope
        c.custom_should_register = self.custom_should_register
        return c

    def reset(self) -> None:
        """Nothing kept between runs (no keyframes are scheduled here)."""

    def should_register(self, model: Any, model_options: dict, target_dict: dict, registered: "HookGroup") -> bool:
        return self.custom_should_register(self, model, model_options, target_dict, registered)

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: "HookGroup") -> bool:
        kind = self.hook_type.value if self.hook_type is not None else type(self).__name__
        raise NotImplementedError(f"{kind} hooks are not supported by Tessera yet (only transformer_options / "
                                  f"wrapper hooks run)")

    def __eq__(self, other: object) -> bool:
        return self.__class__ == other.__class__ and self.hook_ref == getattr(other, "hook_ref", None)

    def __hash__(self) -> int:
        return hash(self.hook_ref)


class TransformerOptionsHook(Hook):
    """Wrappers / callbacks / patches (`transformers_dict`, shaped like transformer_options) for the run."""

    def __init__(self, transformers_dict: Optional[dict] = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.TransformerOptions, hook_scope=hook_scope)
        self.transformers_dict = transformers_dict

    def clone(self) -> "TransformerOptionsHook":
        c = super().clone()
        c.transformers_dict = self.transformers_dict
        return c

    def add_hook_patches(self, model: Any, model_options: dict, target_dict: dict, registered: "HookGroup") -> bool:
        if not self.should_register(model, model_options, target_dict, registered):
            return False
        if self.hook_scope != EnumHookScope.AllConditioning:
            raise NotImplementedError("transformer_options hooks limited to their own conditioning (HookedOnly) "
                                      "are not supported by Tessera yet")
        registered.add(self)
        merge_nested_dicts(model_options.setdefault("transformer_options", {}), self.transformers_dict or {},
                           copy_dict1=False)
        return True


WrapperHook = TransformerOptionsHook


class WeightHook(Hook):
    def __init__(self, strength_model: float = 1.0, strength_clip: float = 1.0) -> None:
        super().__init__(hook_type=EnumHookType.Weight)
        self.strength_model, self.strength_clip = strength_model, strength_clip


class ObjectPatchHook(Hook):
    def __init__(self, object_patches: Optional[dict] = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.ObjectPatch, hook_scope=hook_scope)
        self.object_patches = object_patches


class AdditionalModelsHook(Hook):
    def __init__(self, models: Optional[list] = None, key: Optional[str] = None) -> None:
        super().__init__(hook_type=EnumHookType.AdditionalModels)
        self.models, self.key = models, key


class InjectionsHook(Hook):
    def __init__(self, key: Optional[str] = None, injections: Optional[list] = None,
                 hook_scope: EnumHookScope = EnumHookScope.AllConditioning) -> None:
        super().__init__(hook_type=EnumHookType.Injections, hook_scope=hook_scope)
        self.key, self.injections = key, injections


class HookGroup:
    """Hooks by type; each hook once."""

    def __init__(self) -> None:
        self.hooks: List[Hook] = []
        self._hook_dict: Dict[EnumHookType, List[Hook]] = {}

    def __len__(self) -> int:
        return len(self.hooks)

    def add(self, hook: Hook) -> None:
        if hook not in self.hooks:
            self.hooks.append(hook)
            self._hook_dict.setdefault(hook.hook_type, []).append(hook)

    def remove(self, hook: Hook) -> None:
        if hook in self.hooks:
            self.hooks.remove(hook)
            self._hook_dict[hook.hook_type].remove(hook)

    def get_type(self, hook_type: EnumHookType) -> List[Hook]:
        return list(self._hook_dict.get(hook_type, []))

    def contains(self, hook: Hook) -> bool:
        return hook in self.hooks

    def is_subset_of(self, other: "HookGroup") -> bool:
        return set(self.hooks).issubset(set(other.hooks))

    def clone(self) -> "HookGroup":
        c = HookGroup()
        for hook in self.hooks:
            c.add(hook.clone())
        return c

    def clone_and_combine(self, other: "HookGroup") -> "HookGroup":
        c = self.clone()
        for hook in (other.hooks if other is not None else []):
            c.add(hook.clone())
        return c

    def reset(self) -> None:
        for hook in self.hooks:
            hook.reset()

    @staticmethod
    def combine_all_hooks(hooks_list: Iterable[Optional["HookGroup"]], require_count: int = 0) -> Optional["HookGroup"]:
        groups = [g for g in hooks_list if g is not None]
        if len(groups) < max(require_count, 1):
            return None
        if len(groups) == 1:
            return groups[0]
        out = HookGroup()
        for group in groups:
            for hook in group.hooks:
                out.add(hook.clone())
        return out


def control_hooks(controls: Iterable[Any]) -> HookGroup:
    """Every hook the controls (and the controls stacked below them) carry as `extra_hooks`."""
    found = HookGroup()
    for control in controls:
        seen = set()
        while control is not None and id(control) not in seen:
            seen.add(id(control))
            group = getattr(control, "extra_hooks", None)
            for hook in (group.hooks if group is not None else []):
                found.add(hook)
            control = getattr(control, "previous_controlnet", None)
    return found


def register_hooks(hooks: HookGroup, model: Any, model_options: dict) -> HookGroup:
    """Register `hooks` for a run into `model_options` (the run's clone); returns those that registered."""
    registered = HookGroup()
    target = create_target_dict(EnumWeightTarget.Model)
    for hook in hooks.hooks:
        hook.add_hook_patches(model, model_options, target, registered)
    model_options["registered_hooks"] = registered
    return registered
