"""`comfy.patcher_extension`: wrapper and callback kinds and their executor (model_management/patcher_extension.py)."""
from model_management.patcher_extension import (CALLBACK_KINDS, WRAPPER_KINDS, CallbacksMP, WrapperExecutor,  # noqa
                                                WrappersMP, add_wrapper_with_key, get_all_callbacks,
                                                get_all_wrappers, merge_nested_dicts)


class PatcherInjection:
    """An (inject, eject) pair of callables a pack attaches to a model."""

    def __init__(self, inject, eject) -> None:
        self.inject, self.eject = inject, eject
