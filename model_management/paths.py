"""Where files live: the user folders (output, input, temp, user) and the model folders by kind.

Model folders follow the common layout `models/<kind>/` (checkpoints, vae, loras, ...), and more roots can be added
from a model-paths YAML in the widely used `extra_model_paths.yaml` format. Every name that arrives from a request
or a workflow is resolved with `realpath` and must stay inside its root: `safe_join` is the one place that checks.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})

# kind -> (folder name under models/, allowed extensions)
DEFAULT_MODEL_KINDS: Dict[str, Tuple[str, frozenset]] = {
    "checkpoints": ("checkpoints", MODEL_EXTENSIONS),
    "configs": ("configs", frozenset({".yaml"})),
    "vae": ("vae", MODEL_EXTENSIONS),
    "loras": ("loras", MODEL_EXTENSIONS),
    "embeddings": ("embeddings", MODEL_EXTENSIONS),
    "hypernetworks": ("hypernetworks", MODEL_EXTENSIONS),
    "controlnet": ("controlnet", MODEL_EXTENSIONS),
    "t2i_adapter": ("t2i_adapter", MODEL_EXTENSIONS),
    "upscale_models": ("upscale_models", MODEL_EXTENSIONS),
    "clip": ("clip", MODEL_EXTENSIONS),
    "text_encoders": ("text_encoders", MODEL_EXTENSIONS),
    "unet": ("unet", MODEL_EXTENSIONS),
    "diffusion_models": ("diffusion_models", MODEL_EXTENSIONS),
    "clip_vision": ("clip_vision", MODEL_EXTENSIONS),
    "style_models": ("style_models", MODEL_EXTENSIONS),
    "vae_approx": ("vae_approx", MODEL_EXTENSIONS),
    "gligen": ("gligen", MODEL_EXTENSIONS),
    "photomaker": ("photomaker", MODEL_EXTENSIONS),
    "model_patches": ("model_patches", MODEL_EXTENSIONS),
    "audio_encoders": ("audio_encoders", MODEL_EXTENSIONS),
    "classifiers": ("classifiers", frozenset({""})),  # extension-less files, as ComfyUI lists them
    "diffusers": ("diffusers", frozenset({"folder"})),  # pipeline folders, found with folder_paths, never listed
}
# kinds that are one folder under two names
KIND_ALIASES = {"text_encoders": "clip", "diffusion_models": "unet", "t2i_adapter": "controlnet"}

FOLDER_TYPES = ("output", "input", "temp")


class PathError(ValueError):
    """A name from a request or workflow that would leave its folder, or is otherwise unusable."""


def safe_join(root: str, *parts: str) -> str:
    """`root/parts...` resolved with realpath (symlinks followed); PathError if it leaves `root`."""
    for part in parts:
        if part is None or "\x00" in str(part):
            raise PathError("invalid file name")
        if os.path.isabs(str(part)):
            raise PathError(f"absolute paths are not allowed: {part!r}")
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *[str(p) for p in parts]))
    if candidate != real_root and not candidate.startswith(real_root + os.sep):
        raise PathError(f"path {os.path.join(*[str(p) for p in parts])!r} is outside its folder")
    return candidate


@dataclass
class ModelFolder:
    paths: List[str] = field(default_factory=list)
    extensions: frozenset = MODEL_EXTENSIONS


class Paths:
    """The folders of one server. All attributes are absolute paths."""

    def __init__(self, base_dir: str, output_dir: Optional[str] = None, input_dir: Optional[str] = None,
                 temp_dir: Optional[str] = None, user_dir: Optional[str] = None,
                 models_dir: Optional[str] = None, create: bool = True) -> None:
        self.base_dir = os.path.abspath(base_dir)
        self.output_dir = os.path.abspath(output_dir or os.path.join(self.base_dir, "output"))
        self.input_dir = os.path.abspath(input_dir or os.path.join(self.base_dir, "input"))
        self.temp_dir = os.path.abspath(temp_dir or os.path.join(self.base_dir, "temp"))
        self.user_dir = os.path.abspath(user_dir or os.path.join(self.base_dir, "user"))
        self.models_dir = os.path.abspath(models_dir or os.path.join(self.base_dir, "models"))
        self.custom_node_dirs: List[str] = [os.path.join(self.base_dir, "custom_nodes")]
        self.folders: Dict[str, ModelFolder] = {}
        for kind, (sub, exts) in DEFAULT_MODEL_KINDS.items():
            target = KIND_ALIASES.get(kind)
            if target is not None and target in self.folders:
                self.folders[kind] = self.folders[target]
                self.folders[kind].paths.append(os.path.join(self.models_dir, sub))
                continue
            self.folders[kind] = ModelFolder([os.path.join(self.models_dir, sub)], exts)
        # ComfyUI lists the custom node folders among its kinds too (every file, no extension filter)
        self.folders["custom_nodes"] = ModelFolder(self.custom_node_dirs, frozenset())
        if create:
            for directory in (self.output_dir, self.input_dir, self.temp_dir, self.user_dir,
                              self.custom_node_dirs[0]):
                os.makedirs(directory, exist_ok=True)
            for kind, (sub, _) in DEFAULT_MODEL_KINDS.items():
                os.makedirs(os.path.join(self.models_dir, sub), exist_ok=True)

    # -- user folders -------------------------------------------------------------------------------------------
    def directory_for(self, folder_type: str) -> str:
        if folder_type == "output":
            return self.output_dir
        if folder_type == "input":
            return self.input_dir
        if folder_type == "temp":
            return self.temp_dir
        raise PathError(f"unknown folder type {folder_type!r} (output, input or temp)")

    def annotated(self, name: str, default_type: str = "input") -> Tuple[str, str]:
        """`"file.png [output]"` -> (output folder, "file.png"); without an annotation the default folder."""
        match = re.match(r"^(.*) \[(output|input|temp)\]$", name)
        if match:
            return self.directory_for(match.group(2)), match.group(1)
        return self.directory_for(default_type), name

    def annotated_path(self, name: str, default_type: str = "input") -> str:
        root, filename = self.annotated(name, default_type)
        return safe_join(root, filename)

    def list_input_images(self) -> List[str]:
        exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
        return _list_tree([self.input_dir], exts, skip_dirs={"clipspace"}, top_level_only=False)

    # -- model folders ------------------------------------------------------------------------------------------
    def kinds(self) -> List[str]:
        return list(self.folders)

    def folder_paths(self, kind: str) -> List[str]:
        folder = self.folders.get(kind)
        if folder is None:
            raise KeyError(f"unknown model folder kind {kind!r}")
        return list(folder.paths)

    def add_model_folder(self, kind: str, path: str, is_default: bool = False,
                         extensions: Optional[Iterable[str]] = None) -> None:
        folder = self.folders.get(kind)
        if folder is None:
            folder = self.folders[kind] = ModelFolder([], frozenset(extensions) if extensions else MODEL_EXTENSIONS)
        path = os.path.abspath(path)
        if path in folder.paths:
            folder.paths.remove(path)
        if is_default:
            folder.paths.insert(0, path)
        else:
            folder.paths.append(path)

    def list_files(self, kind: str) -> List[str]:
        """Model files of `kind` across its folders: relative names with '/' separators, sorted, read fresh."""
        folder = self.folders.get(kind)
        if folder is None:
            return []
        return _list_tree(folder.paths, folder.extensions)

    def full_path(self, kind: str, name: str) -> Optional[str]:
        """The file behind a listed name, or None when no folder of `kind` has it (or it would escape)."""
        folder = self.folders.get(kind)
        if folder is None or not isinstance(name, str) or not name:
            return None
        # Model folders are the user's own: a symlink placed there (models kept on another disk) is honoured,
        # but the name itself may not climb out (no absolute paths, no "..").
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or "\x00" in name or any(p in ("..", "") for p in parts):
            return None
        for root in folder.paths:
            candidate = os.path.join(root, *parts)
            if os.path.isfile(candidate):
                return candidate
        return None

    def require(self, kind: str, name: str) -> str:
        """Like full_path, but a clear error naming the folder when the file is not there."""
        found = self.full_path(kind, name)
        if found is None:
            raise FileNotFoundError(f"{kind} file {name!r} not found in {', '.join(self.folder_paths(kind))}")
        return found

    # -- model-paths YAML ----------------------------------------------------------------------------------------
    def load_model_paths_yaml(self, yaml_path: str) -> None:
        """Add the roots of an extra_model_paths.yaml: several named sections, each with an optional base_path,
        per-kind folders (one per line), `is_default`, and `custom_nodes`. Relative paths resolve against the
        YAML's folder (base_path) and then against base_path (the folders)."""
        import yaml

        with open(yaml_path, encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ValueError(f"{yaml_path}: expected named sections at the top level")
        yaml_dir = os.path.dirname(os.path.abspath(yaml_path))
        for section_name, section in config.items():
            if not isinstance(section, dict):
                continue
            base = section.get("base_path")
            base = os.path.expanduser(str(base)) if base else yaml_dir
            if not os.path.isabs(base):
                base = os.path.normpath(os.path.join(yaml_dir, base))
            is_default = bool(section.get("is_default", False))
            for kind, value in section.items():
                if kind in ("base_path", "is_default") or value is None:
                    continue
                entries = [str(v) for v in value] if isinstance(value, list) else str(value).splitlines()
                lines = [line.strip() for line in entries if line.strip()]
                # default folders are inserted at the front one by one: go backwards to keep the YAML's order
                for line in reversed(lines) if is_default else lines:
                    full = os.path.normpath(os.path.join(base, os.path.expanduser(line)))
                    if kind == "custom_nodes":
                        if full not in self.custom_node_dirs:
                            self.custom_node_dirs.append(full)
                    else:
                        self.add_model_folder(kind, full, is_default)

    # -- saving outputs -----------------------------------------------------------------------------------------
    def save_path(self, filename_prefix: str, folder_type: str = "output", width: int = 0,
                  height: int = 0) -> Tuple[str, str, int, str]:
        """Where the next numbered file for `filename_prefix` goes.

        The prefix may hold subfolders ("portraits/cat") and the placeholders %width%, %height%, %year%, %month%,
        %day%, %hour%, %minute%, %second%. Returns (folder, base filename, next counter, subfolder); files are
        named `{base}_{counter:05}_.ext`.
        """
        root = self.directory_for(folder_type)
        prefix = _expand_prefix(filename_prefix or "Tessera", width, height)
        subfolder, base = os.path.split(os.path.normpath(prefix))
        if not base or base in (".", ".."):
            raise PathError(f"invalid filename prefix {filename_prefix!r}")
        folder = safe_join(root, subfolder) if subfolder else os.path.realpath(root)
        os.makedirs(folder, exist_ok=True)
        pattern = re.compile(re.escape(base) + r"_(\d+)_?\.")
        counter = 0
        for entry in os.listdir(folder):
            match = pattern.match(entry)
            if match:
                counter = max(counter, int(match.group(1)))
        rel_sub = os.path.relpath(folder, os.path.realpath(root))
        return folder, base, counter + 1, "" if rel_sub == "." else rel_sub.replace(os.sep, "/")


def _expand_prefix(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def _list_tree(roots: Iterable[str], extensions: Iterable[str], skip_dirs: Iterable[str] = (),
               top_level_only: bool = False) -> List[str]:
    exts = {e.lower() for e in extensions}
    skip = set(skip_dirs)
    names = set()
    for root in roots:
        if not os.path.isdir(root):
            continue
        # followed symlinks can form cycles (a link to a parent): never descend into a folder already on the path
        ancestors = {root: {os.path.realpath(root)}}
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            seen = ancestors.pop(dirpath, set())
            kept = []
            for d in dirnames:
                if d.startswith(".") or d in skip:
                    continue
                real = os.path.realpath(os.path.join(dirpath, d))
                if real in seen:
                    continue
                ancestors[os.path.join(dirpath, d)] = seen | {real}
                kept.append(d)
            dirnames[:] = kept
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                if name.startswith("."):
                    continue
                if exts and os.path.splitext(name)[1].lower() not in exts:
                    continue
                rel = name if rel_dir == "." else os.path.join(rel_dir, name)
                names.add(rel.replace(os.sep, "/"))
            if top_level_only:
                break
    return sorted(names)
