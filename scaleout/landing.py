"""Output files that come back from a worker, landed in the front's own output and temp folders.

A worker saves into a private staging folder that is emptied after every job, so its SaveImage counter restarts at
00001 each time and two workers write the same names. The front therefore picks each file's final name itself:
a name with ComfyUI's counter (`prefix_00001_.png`) gets the next counter free in the front's folder, as SaveImage
would have chosen there; any other taken name gets `_1`, `_2`... before its extension. The renames of one job are
then applied to its `executed` events and to its history outputs, so clients see only the names that exist.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from typing import Any, Dict, Optional, Tuple, Union

from scaleout.actor import file_refs

FileKey = Tuple[str, str, str]  # (type, subfolder, filename)
_COUNTED = re.compile(r"^(?P<prefix>.*)_(?P<counter>\d{5,})_(?P<rest>\..*)?$")


class UnsafeFileName(ValueError):
    """A worker named a file outside the front's folder (a path that climbs out, or an absolute one)."""


class StagedFileMissing(FileNotFoundError):
    """--shared-output, but a worker's staged file is not where the front looks for it."""


class OutputLanding:
    """Writes files into {type: folder}; one lock for all slots, so two jobs never take the same name.

    A file comes as its bytes, or (--shared-output) as the path of a worker's staged copy, which must lie under
    `staging_root`; that copy is moved into place."""

    def __init__(self, folders: Dict[str, str], staging_root: Optional[str] = None) -> None:
        self.folders = folders
        self.staging_root = os.path.realpath(staging_root) if staging_root else None
        self._lock = threading.Lock()

    def _staged(self, path: str) -> str:
        full = os.path.realpath(path)
        if self.staging_root is None or not full.startswith(self.staging_root + os.sep):
            raise UnsafeFileName(f"staged file {path!r} is outside the workers' staging folder")
        if not os.path.isfile(full):
            raise StagedFileMissing(
                f"--shared-output: the front cannot see the worker's file {full}; the temp folder must be on "
                "storage every host mounts at the same path")
        return full

    def _target_dir(self, kind: str, subfolder: str) -> str:
        root = os.path.realpath(self.folders[kind])
        target = os.path.realpath(os.path.join(root, subfolder))
        if target != root and not target.startswith(root + os.sep):
            raise UnsafeFileName(f"subfolder {subfolder!r} leaves the {kind} folder")
        return target

    @staticmethod
    def _free_name(folder: str, filename: str) -> str:
        if os.sep in filename or "/" in filename or filename in ("", ".", ".."):
            raise UnsafeFileName(f"file name {filename!r} is not a plain name")
        taken = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        counted = _COUNTED.match(filename)
        if counted:
            prefix, rest = counted["prefix"], counted["rest"] or ""
            width = len(counted["counter"])
            numbers = [int(m["counter"]) for m in map(_COUNTED.match, taken)
                       if m and m["prefix"] == prefix and (m["rest"] or "") == rest]
            if filename not in taken and (not numbers or int(counted["counter"]) > max(numbers)):
                return filename
            return f"{prefix}_{max(numbers) + 1:0{width}d}_{rest}"
        if filename not in taken:
            return filename
        stem, ext = os.path.splitext(filename)
        n = 1
        while f"{stem}_{n}{ext}" in taken:
            n += 1
        return f"{stem}_{n}{ext}"

    def land(self, files: Dict[FileKey, Union[bytes, str]]) -> Dict[FileKey, str]:
        """Write (bytes) or move (a staged path) each file; returns {key: the name it got} for those whose name
        changed."""
        renames: Dict[FileKey, str] = {}
        with self._lock:
            for (kind, subfolder, filename), content in files.items():
                if kind not in self.folders:
                    continue
                folder = self._target_dir(kind, subfolder)
                os.makedirs(folder, exist_ok=True)
                name = self._free_name(folder, filename)
                if isinstance(content, str):
                    shutil.move(self._staged(content), os.path.join(folder, name))  # a rename on one filesystem
                else:
                    with open(os.path.join(folder, name), "xb") as handle:
                        handle.write(content)
                if name != filename:
                    renames[(kind, subfolder, filename)] = name
        return renames


def apply_renames(value: Any, renames: Dict[FileKey, str]) -> None:
    """Rewrite, in place, the file entries of a ui output (or a whole outputs dict) that `renames` names."""
    if not renames:
        return
    for ref in file_refs(value):
        new = renames.get((ref["type"], ref.get("subfolder") or "", ref["filename"]))
        if new is not None:
            ref["filename"] = new
