"""Text side of the diffusion stack: CLIP BPE tokenizer, prompt weighting, textual inversion, CLIP text encoders."""
from .clip_encoders import ClipTextEncoder, ClipTextStack, FAMILIES, RoleSettings, detect_text_family
from .clip_keys import convert_hf, convert_openclip, convert_text_encoder, derive_text_config, heads_for_width
from .embeddings import (EmbeddingError, EmbeddingLibrary, directory_finder, embedding_finder,
                         load_embedding_file)
from .prompt_weights import TokenWindow, empty_window, parse_prompt_weights, tokenize_weighted
from .tokenizer import ClipTokenizer, default_tokenizer

__all__ = [
    "ClipTextEncoder", "ClipTextStack", "FAMILIES", "RoleSettings", "detect_text_family",
    "convert_hf", "convert_openclip", "convert_text_encoder", "derive_text_config", "heads_for_width",
    "EmbeddingError", "EmbeddingLibrary", "directory_finder", "embedding_finder", "load_embedding_file",
    "TokenWindow", "empty_window", "parse_prompt_weights", "tokenize_weighted",
    "ClipTokenizer", "default_tokenizer",
]
