"""`comfy.sdxl_clip`: the classes of `clip.tokenizer` / `clip.cond_stage_model` for SDXL and its refiner
(model_management/clip_face.py), for packs' isinstance checks."""
from model_management.clip_face import SDXLClipG, SDXLClipModel, SDXLRefinerClipModel, SDXLTokenizer  # noqa: F401
