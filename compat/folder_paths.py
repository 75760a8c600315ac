"""`import folder_paths`: ComfyUI's folder API over the bound `model_management.paths.Paths`.

Every call reads the bound Paths at call time, so listings are always fresh (a file dropped into models/ shows up
without a restart) and module attributes such as `models_dir` follow a re-bind (module `__getattr__`).
`folder_names_and_paths` is a live view: packs that register their own kinds by assigning into it, or append to a
kind's path list, change the engine's Paths directly.
"""
from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from typing import Any, Iterable, Iterator, List, Optional, Tuple

from compat import _runtime
from model_management.paths import MODEL_EXTENSIONS, ModelFolder, PathError, Paths, safe_join

supported_pt_extensions = set(MODEL_EXTENSIONS)

_ANNOTATION = re.compile(r"^(.*) \[(output|input|temp)\]$")
# ComfyUI's legacy kind names; our Paths already treats each pair as one folder under two names.
_LEGACY = {"unet": "diffusion_models", "clip": "text_encoders"}


def _paths() -> Paths:
    return _runtime.paths()


def map_legacy(folder_name: str) -> str:
    return _LEGACY.get(folder_name, folder_name)


def _mutable_extensions(folder: ModelFolder) -> set:
    """The folder's extension set, made mutable in place so packs' `.add(".gguf")` reaches the engine."""
    if not isinstance(folder.extensions, set):
        folder.extensions = set(folder.extensions)
    return folder.extensions


class _FolderView(MutableMapping):
    """kind -> (paths list, extensions set), both the live objects of the bound Paths."""

    def __getitem__(self, kind: str) -> Tuple[List[str], set]:
        folder = _paths().folders[kind]
        return folder.paths, _mutable_extensions(folder)

    def __setitem__(self, kind: str, value: Any) -> None:
        folder_list, extensions = value
        paths = folder_list if isinstance(folder_list, list) else list(folder_list)
        _paths().folders[kind] = ModelFolder(paths, set(extensions or ()))

    def __delitem__(self, kind: str) -> None:
        del _paths().folders[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(list(_paths().folders))

    def __len__(self) -> int:
        return len(_paths().folders)

    def __repr__(self) -> str:
        return f"folder_names_and_paths({dict(self.items())!r})"


folder_names_and_paths = _FolderView()


def __getattr__(name: str) -> Any:
    """Attributes that must follow the bound Paths."""
    if name == "models_dir":
        return _paths().models_dir
    if name == "base_path":
        return _paths().base_dir
    if name == "output_directory":
        return _paths().output_dir
    if name == "input_directory":
        return _paths().input_dir
    if name == "temp_directory":
        return _paths().temp_dir
    if name == "user_directory":
        return _paths().user_dir
    raise AttributeError(f"module 'folder_paths' has no attribute {name!r}")


# -- user folders ---------------------------------------------------------------------------------------------------
def get_output_directory() -> str:
    return _paths().output_dir


def get_input_directory() -> str:
    return _paths().input_dir


def get_temp_directory() -> str:
    return _paths().temp_dir


def get_user_directory() -> str:
    return _paths().user_dir


def get_directory_by_type(type_name: str) -> Optional[str]:
    try:
        return _paths().directory_for(type_name)
    except PathError:
        return None


def annotated_filepath(name: str) -> Tuple[str, Optional[str]]:
    """`"x.png [output]"` -> ("x.png", output folder); an unannotated name gives (name, None)."""
    match = _ANNOTATION.match(name)
    if match:
        return match.group(1), _paths().directory_for(match.group(2))
    return name, None


def get_annotated_filepath(name: str, default_dir: Optional[str] = None) -> str:
    """The file a widget value names: in the annotated folder, else `default_dir`, else input/. Resolved with
    realpath and refused (PathError) when it would leave that folder."""
    filename, base = annotated_filepath(name)
    if base is None:
        base = default_dir if default_dir is not None else get_input_directory()
    return safe_join(base, filename)


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except PathError:
        return False


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0,
                        image_height: int = 0) -> Tuple[str, str, int, str, str]:
    """(full_output_folder, filename, counter, subfolder, filename_prefix) for the next numbered file, with the
    engine's save rules (placeholders, subfolders that must stay inside `output_dir`, `{filename}_{counter:05}_`)."""
    target = Paths(output_dir, output_dir=output_dir, create=False)
    folder, filename, counter, subfolder = target.save_path(filename_prefix, "output", image_width, image_height)
    prefix = f"{subfolder}/{filename}" if subfolder else filename
    return folder, filename, counter, subfolder, prefix


# -- model folders ----------------------------------------------------------------------------------------------------
def get_folder_paths(folder_name: str) -> List[str]:
    return _paths().folder_paths(map_legacy(folder_name))


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    """Add a folder to a kind; a new kind lists every file (as in ComfyUI, its extension set starts empty)."""
    paths = _paths()
    kind = map_legacy(folder_name)
    is_new = kind not in paths.folders
    paths.add_model_folder(kind, full_folder_path, is_default)
    if is_new:
        paths.folders[kind].extensions = set()


def get_filename_list(folder_name: str) -> List[str]:
    """Relative names of the files of a kind, sorted, read fresh on every call ([] for an unknown kind)."""
    return _paths().list_files(map_legacy(folder_name))


def get_full_path(folder_name: str, filename: str) -> Optional[str]:
    return _paths().full_path(map_legacy(folder_name), filename)


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    found = get_full_path(folder_name, filename)
    if found is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return found


def filter_files_extensions(files: Iterable[str], extensions: Iterable[str]) -> List[str]:
    exts = {e.lower() for e in extensions}
    return sorted(f for f in files if not exts or os.path.splitext(f)[-1].lower() in exts)


def recursive_search(directory: str, excluded_dir_names: Optional[List[str]] = None) -> Tuple[List[str], dict]:
    """(relative file names, {dir: mtime}) under `directory`, following ComfyUI's return shape."""
    if not os.path.isdir(directory):
        return [], {}
    excluded = set(excluded_dir_names or ())
    files: List[str] = []
    dirs = {directory: os.path.getmtime(directory)}
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in excluded]
        for d in dirnames:
            full = os.path.join(dirpath, d)
            try:
                dirs[full] = os.path.getmtime(full)
            except OSError:
                continue
        for name in filenames:
            files.append(os.path.relpath(os.path.join(dirpath, name), directory).replace(os.sep, "/"))
    return files, dirs
