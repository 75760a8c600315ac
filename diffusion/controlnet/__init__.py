"""ControlNets and other control models (T2I-adapters, control-LoRAs): loading, the networks, and the runtime that
feeds their residuals to the UNet during sampling."""
from .base import ControlModel, control_family

__all__ = ["ControlModel", "control_family"]
