"""`comfy.model_base`: ModelType and the BaseModel classes of our MODEL's `model.model` view
(model_management/patcher_face.py): SD1/SD2 models are BaseModel, SDXL ones SDXL or SDXLRefiner, as on ComfyUI."""
from model_management.patcher_face import BaseModelView as BaseModel  # noqa: F401
from model_management.patcher_face import ModelType  # noqa: F401
from model_management.patcher_face import SDXLModelView as SDXL
from model_management.patcher_face import SDXLRefinerModelView as SDXLRefiner  # noqa: F401


class SDXL_instructpix2pix(SDXL):  # noqa: N801 - ComfyUI's name
    """InstructPix2Pix SDXL models; Tessera loads none, so no MODEL's view is one."""


def convert_tensor(extra, dtype, device):
    """A tensor moved to `device` in `dtype` (integer tensors keep their dtype), as conditioning extras are."""
    if extra.dtype.is_floating_point:
        return extra.to(device=device, dtype=dtype)
    return extra.to(device=device)
