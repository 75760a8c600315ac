"""Services: the engine-wide resources a node may use, handed to it through its context (never module globals).

One `Services` per server (or CLI run): folder paths, the model manager and settings. Tests build their own with
temporary folders. The scheduler (execution/) only carries it to the nodes: it never looks inside, so execution
knows nothing of models or folders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from model_management.paths import Paths


@dataclass
class Services:
    paths: Paths
    settings: Dict[str, Any] = field(default_factory=dict)
    models: Optional[Any] = None  # the model manager (model_management.residency.ModelResidency)

    @property
    def devices(self) -> Optional[Any]:
        """The device loader above the model manager (model_management.device_loading), if there is one."""
        return getattr(self.models, "devices", None)

    @classmethod
    def for_directory(cls, base_dir: str, **paths: Any) -> "Services":
        return cls(Paths(base_dir, **paths))
