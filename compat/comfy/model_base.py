"""`comfy.model_base`: ModelType and the BaseModel view of our MODEL (model_management/patcher_face.py)."""
from model_management.patcher_face import BaseModelView as BaseModel  # noqa: F401
from model_management.patcher_face import ModelType  # noqa: F401


class SD15(BaseModel):
    """Type marker for isinstance checks; our MODELs' views are plain BaseModel objects."""


class SDXL(BaseModel):
    pass


class SDXLRefiner(BaseModel):
    pass


class SDXL_instructpix(BaseModel):  # noqa: N801 - ComfyUI's name
    pass


def convert_tensor(extra, dtype, device):
    """A tensor moved to `device` in `dtype` (integer tensors keep their dtype), as conditioning extras are."""
    if extra.dtype.is_floating_point:
        return extra.to(device=device, dtype=dtype)
    return extra.to(device=device)
