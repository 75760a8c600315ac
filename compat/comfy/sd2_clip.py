"""`comfy.sd2_clip`: the classes of `clip.tokenizer` / `clip.cond_stage_model` for SD2 (model_management/clip_face.py)."""
from model_management.clip_face import SD2ClipModel, SD2Tokenizer  # noqa: F401
