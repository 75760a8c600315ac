"""Textual-inversion embeddings: files of token vectors that `embedding:name` puts in a prompt.

Formats: `.safetensors` (SD1/SD2: `emb_params` or any single tensor; SDXL: `clip_l` [n,768] and `clip_g` [n,1280]),
and pickles (`.pt`/`.bin`/`.pth`: A1111's `{'string_to_param': {'*': tensor}, ...}` or a bare tensor / one-tensor
dict). Pickles are read only through `torch.load(weights_only=True)`, so a file that would run code is refused.

Files are found through a callable `find(name) -> path | None` the caller provides (the server wires it to the
`embeddings` model folder); `embedding_finder` builds one from a folder listing. Vectors that do not fit the text
encoder (an SDXL embedding on SD1, an SD1 one on SD2) are a clear error naming the file, never silently ignored.
"""
from __future__ import annotations

import os
import pickle
from typing import Callable, Dict, Iterable, Optional, Tuple

import torch

from model_management.file_loading import ModelFileError, RefusedPickleError

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".pt", ".bin", ".pth", ".ckpt")
EMBEDDING_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS
SDXL_KEYS = ("clip_l", "clip_g")
GENERIC = ""  # key of the vector set of a single-encoder embedding

Finder = Callable[[str], Optional[str]]


class EmbeddingError(ModelFileError):
    """An embedding file that cannot be used with this model; the message names the file."""


def _as_matrix(value, path: str, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise EmbeddingError(f"{os.path.basename(path)}: entry {key!r} is {type(value).__name__}, not a tensor")
    value = value.detach().float()
    if value.dim() == 1:
        value = value.unsqueeze(0)
    if value.dim() != 2:
        raise EmbeddingError(f"{os.path.basename(path)}: entry {key!r} has shape {tuple(value.shape)}; "
                             f"expected [vectors, width]")
    return value


def _vector_sets(loaded, path: str) -> Dict[str, torch.Tensor]:
    """The loaded object -> {"clip_l"/"clip_g" or GENERIC: [n, width]}."""
    name = os.path.basename(path)
    if isinstance(loaded, torch.Tensor):
        return {GENERIC: _as_matrix(loaded, path, "<tensor>")}
    if not isinstance(loaded, dict):
        raise EmbeddingError(f"{name}: not an embedding (holds {type(loaded).__name__})")
    if "string_to_param" in loaded:
        params = loaded["string_to_param"]
        if isinstance(params, dict) and len(params) >= 1:
            key = "*" if "*" in params else next(iter(params))
            return {GENERIC: _as_matrix(params[key], path, f"string_to_param/{key}")}
        raise EmbeddingError(f"{name}: 'string_to_param' holds no vectors")
    keyed = {k: _as_matrix(loaded[k], path, k) for k in SDXL_KEYS if k in loaded}
    if keyed:
        return keyed
    if "emb_params" in loaded:
        return {GENERIC: _as_matrix(loaded["emb_params"], path, "emb_params")}
    tensors = [(k, v) for k, v in loaded.items() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return {GENERIC: _as_matrix(tensors[0][1], path, str(tensors[0][0]))}
    raise EmbeddingError(f"{name}: cannot tell which entry holds the embedding vectors "
                         f"(keys: {', '.join(map(str, list(loaded)[:8]))})")


def load_embedding_file(path: str) -> Dict[str, torch.Tensor]:
    """Read one embedding file -> {"clip_l"/"clip_g" or "" (single encoder): float32 [n, width]}."""
    name = os.path.basename(path)
    lower = path.lower()
    if not os.path.isfile(path):
        raise EmbeddingError(f"{path}: embedding file not found")
    if lower.endswith(SAFETENSORS_EXTENSIONS):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            loaded = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise EmbeddingError(f"{name}: not a valid safetensors file: {exc}") from None
    elif lower.endswith(PICKLE_EXTENSIONS):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise RefusedPickleError(
                f"{name}: refused: the embedding holds Python objects other than tensors, and loading it could run "
                f"code. Only plain tensors are loaded; convert it to .safetensors if you trust it. ({exc})") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise EmbeddingError(f"{name}: not a readable embedding file: {exc}") from None
    else:
        raise EmbeddingError(f"{name}: unknown embedding file type (expected {', '.join(EMBEDDING_EXTENSIONS)})")
    return _vector_sets(loaded, path)


def embedding_finder(list_names: Callable[[], Iterable[str]], resolve: Callable[[str], Optional[str]]) -> Finder:
    """A `find(name)` over a folder listing: `list_names()` gives relative names ('sub/foo.pt'), `resolve(name)` the
    file behind one (e.g. `paths.list_files("embeddings")` and `paths.full_path("embeddings", ...)`).
    Matches the exact name, the name plus an extension, then a unique file whose stem is the name."""
    def find(name: str) -> Optional[str]:
        if not name or "\x00" in name:
            return None
        wanted = name.replace("\\", "/")
        usable = [n for n in list_names() if n.lower().endswith(EMBEDDING_EXTENSIONS)]
        if wanted in usable:
            return resolve(wanted)
        for ext in EMBEDDING_EXTENSIONS:  # "foo" -> "foo.safetensors" before "foo.pt"
            if wanted + ext in usable:
                return resolve(wanted + ext)
        by_stem = [n for n in usable if os.path.splitext(n.rsplit("/", 1)[-1])[0] == wanted]
        if len(by_stem) == 1:  # "foo" -> "sub/foo.pt" when unambiguous
            return resolve(by_stem[0])
        return None
    return find


def directory_finder(*directories: str) -> Finder:
    """A `find(name)` over plain folders (standalone use and tests); names may not leave their folder."""
    def list_names():
        for root in directories:
            for dirpath, _dirs, files in os.walk(root):
                for f in files:
                    yield os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")

    def resolve(rel: str) -> Optional[str]:
        for root in directories:
            real_root = os.path.realpath(root)
            candidate = os.path.realpath(os.path.join(real_root, rel))
            if candidate.startswith(real_root + os.sep) and os.path.isfile(candidate):
                return candidate
        return None
    return embedding_finder(list_names, resolve)


class EmbeddingLibrary:
    """Finds and loads embeddings by name (cached per file and modification time) and hands each text encoder the
    vectors meant for it."""

    def __init__(self, find: Finder):
        self.find = find
        self._cache: Dict[str, Tuple[Tuple[float, int], Dict[str, torch.Tensor]]] = {}

    def vector_sets(self, name: str) -> Optional[Tuple[str, Dict[str, torch.Tensor]]]:
        path = self.find(name)
        if path is None:
            return None
        st = os.stat(path)
        stamp = (st.st_mtime, st.st_size)
        cached = self._cache.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_embedding_file(path))
            self._cache[path] = cached
        return path, cached[1]

    def vectors_for(self, name: str, role: str, width: int, dual_encoder: bool) -> Optional[torch.Tensor]:
        """[n, width] vectors of `name` for the `role` encoder ("clip_l", "clip_g", "clip_h"), None if not found.
        `dual_encoder`: the model is SDXL-class (files keyed clip_l/clip_g are meant for it)."""
        found = self.vector_sets(name)
        if found is None:
            return None
        path, sets = found
        base = os.path.basename(path)
        if GENERIC in sets:
            vectors = sets[GENERIC]
        else:
            if not dual_encoder:
                raise EmbeddingError(f"embedding {base}: holds SDXL vectors ({', '.join(sorted(sets))}); this model "
                                     f"has a single {role} text encoder ({width} wide) and cannot use it")
            if role not in sets:
                raise EmbeddingError(f"embedding {base}: has no vectors for the {role} text encoder "
                                     f"(it holds {', '.join(sorted(sets))})")
            vectors = sets[role]
        if vectors.shape[1] != width:
            raise EmbeddingError(f"embedding {base}: its vectors are {vectors.shape[1]} wide but the {role} text "
                                 f"encoder of this model takes {width} (made for another model family?)")
        return vectors

    def lookup(self, role: str, width: int, dual_encoder: bool = False) -> Callable[[str], Optional[torch.Tensor]]:
        """The `embeddings_lookup` callable tokenize_weighted takes, for one encoder."""
        return lambda name: self.vectors_for(name, role, width, dual_encoder)
