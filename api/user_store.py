"""Users and their files, stored under the user directory as ComfyUI lays them out: `users.json` (multi-user mode),
`<user id>/comfy.settings.json`, and each user's own files (`<user id>/workflows/...`, `subgraphs/`, ...).

Single-user by default: every request is the user "default". With `multi_user`, the `comfy-user` request header
names the user, who must have been created first (POST /users). A user id is a safe folder name (letters, digits,
`-`, `_`), and every file path is resolved inside that user's folder with symlinks followed (the same containment
check as /view): a name that would leave it is refused, never followed.
"""
from __future__ import annotations

import json
import os
import re
import threading
import uuid
from typing import Any, Dict, List, Optional

from model_management.paths import PathError, safe_join

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
STANDARD_FOLDERS = ("workflows", "subgraphs")
_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class UnknownUser(KeyError):
    """The request names a user that does not exist (or, in single-user mode, any user but "default")."""


class UserStore:
    def __init__(self, user_dir: str, multi_user: bool = False) -> None:
        self.root = os.path.abspath(user_dir)
        self.multi_user = multi_user
        self._lock = threading.RLock()
        os.makedirs(self.root, exist_ok=True)
        if not multi_user:  # the folders the frontend lists on start exist, so it finds them empty, not missing
            for sub in STANDARD_FOLDERS:
                os.makedirs(os.path.join(self.root, DEFAULT_USER, sub), exist_ok=True)

    # -- users -------------------------------------------------------------------------------------------------
    @property
    def users_file(self) -> str:
        return os.path.join(self.root, "users.json")

    def users(self) -> Dict[str, str]:
        """user id -> display name."""
        if not self.multi_user:
            return {DEFAULT_USER: DEFAULT_USER}
        try:
            with open(self.users_file, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items() if _USER_ID.match(str(k))} if isinstance(data, dict) else {}

    def add_user(self, name: Any) -> str:
        """A new user id for display name `name` (ValueError: empty or taken)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError("username not provided")
        name = name.strip()
        with self._lock:
            users = self.users()
            if name in users.values():
                raise ValueError("Duplicate username.")
            user_id = re.sub(r"[^A-Za-z0-9_-]+", "-", name)[:64] + "_" + str(uuid.uuid4())
            users[user_id] = name
            tmp = self.users_file + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(users, f)
            os.replace(tmp, self.users_file)
        return user_id

    def user_id(self, header: Optional[str]) -> str:
        """The user a request acts as: the `comfy-user` header in multi-user mode, else "default"."""
        user = header if (self.multi_user and header) else DEFAULT_USER
        if not _USER_ID.match(user) or user not in self.users():
            raise UnknownUser(user)
        return user

    # -- files -------------------------------------------------------------------------------------------------
    def user_root(self, user: str) -> str:
        return safe_join(self.root, user)

    def path(self, user: str, name: str) -> str:
        """The absolute path of `name` inside `user`'s folder (PathError when it would leave it)."""
        if not name or "\x00" in name or os.path.isabs(name) or name.startswith(("/", "\\")):
            raise PathError("invalid file name")
        root = self.user_root(user)
        path = safe_join(root, *[p for p in name.replace("\\", "/").split("/") if p not in ("", ".")])
        if path == os.path.realpath(root):
            raise PathError("a file name is needed")
        return path

    def file_info(self, user: str, path: str) -> Dict[str, Any]:
        stat = os.stat(path)
        return {"path": os.path.relpath(path, os.path.realpath(self.user_root(user))).replace(os.sep, "/"),
                "size": stat.st_size, "modified": stat.st_mtime, "created": stat.st_ctime}

    def list_files(self, user: str, directory: str, recurse: bool = False) -> List[str]:
        """Paths of the files in `directory` (relative to it, "/"-separated), sorted; FileNotFoundError if it is
        not a folder. Names starting with '.' are left out, as ComfyUI's glob leaves them."""
        folder = self.path(user, directory)
        if not os.path.isdir(folder):
            raise FileNotFoundError(directory)
        out = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recurse else []
            for name in sorted(filenames):
                if not name.startswith("."):
                    out.append(os.path.relpath(os.path.join(dirpath, name), folder).replace(os.sep, "/"))
        return out

    def tree(self, user: str, directory: str = "") -> List[Dict[str, Any]]:
        """Every folder and file below `directory` (paths relative to the user's folder), folders first, then by
        name, as ComfyUI's /v2/userdata lists them."""
        base = os.path.realpath(self.user_root(user))
        folder = self.path(user, directory) if directory else base
        if not os.path.isdir(folder):
            if folder == base:
                return []
            raise NotADirectoryError(directory) if os.path.exists(folder) else FileNotFoundError(directory)
        out: List[Dict[str, Any]] = []
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            for name in dirnames:
                out.append({"name": name, "path": os.path.relpath(os.path.join(dirpath, name), base)
                            .replace(os.sep, "/"), "type": "directory"})
            for name in filenames:
                full = os.path.join(dirpath, name)
                entry = {"name": name, "path": os.path.relpath(full, base).replace(os.sep, "/"), "type": "file"}
                try:
                    stat = os.stat(full)
                    entry.update(size=stat.st_size, modified=stat.st_mtime)
                except OSError:
                    pass
                out.append(entry)
        out.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return out

    # -- settings ----------------------------------------------------------------------------------------------
    def settings(self, user: str) -> Dict[str, Any]:
        """The user's settings ({} when none are stored or the file is unreadable)."""
        try:
            with open(self.path(user, SETTINGS_FILE), encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_settings(self, user: str, settings: Dict[str, Any]) -> None:
        path = self.path(user, SETTINGS_FILE)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with self._lock:
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(settings, f, indent=4)
            os.replace(tmp, path)

    def update_settings(self, user: str, changes: Dict[str, Any]) -> None:
        with self._lock:
            self.save_settings(user, {**self.settings(user), **changes})
