"""Text side of the diffusion stack: CLIP BPE tokenizer, prompt weighting, CLIP text encoders. Embedding files
are found and read by model_management/embeddings.py; the stack only asks its `embeddings` for vectors."""
from .clip_encoders import ClipTextEncoder, ClipTextStack, FAMILIES, RoleSettings, detect_text_family
from .clip_keys import convert_hf, convert_openclip, convert_text_encoder, derive_text_config, heads_for_width
from .prompt_weights import TokenWindow, empty_window, parse_prompt_weights, tokenize_weighted
from .tokenizer import ClipTokenizer, default_tokenizer

__all__ = [
    "ClipTextEncoder", "ClipTextStack", "FAMILIES", "RoleSettings", "detect_text_family",
    "convert_hf", "convert_openclip", "convert_text_encoder", "derive_text_config", "heads_for_width",
    "TokenWindow", "empty_window", "parse_prompt_weights", "tokenize_weighted",
    "ClipTokenizer", "default_tokenizer",
]
