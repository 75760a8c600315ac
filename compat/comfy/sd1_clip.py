"""`comfy.sd1_clip`: the classes of `clip.tokenizer` / `clip.cond_stage_model` for SD1 (model_management/clip_face.py),
for packs' isinstance checks."""
from model_management.clip_face import SD1ClipModel, SD1Tokenizer, SDClipModel, SDTokenizer  # noqa: F401
