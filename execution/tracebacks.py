"""Tracebacks as clients see them (`execution_error.traceback`, /history): ComfyUI's list of lines, with file paths
shown relative to the project, to site-packages or to the Python library, so no response reveals where the server
is installed or who runs it. Paths elsewhere keep only their last two parts."""
from __future__ import annotations

import functools
import os
import re
import site
import sysconfig
import traceback
from typing import List, Tuple

_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FILE_LINE = re.compile(r'File "([^"]+)"')


@functools.lru_cache(maxsize=1)
def _roots() -> List[Tuple[str, str]]:
    """(absolute folder, label) pairs, longest first so the most specific root wins."""
    roots = [(_PROJECT, "")]
    packages = set(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    packages.update(p for p in (sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"),
                                getattr(site, "USER_SITE", None)) if p)
    roots += [(p, "site-packages") for p in packages]
    roots.append((sysconfig.get_paths().get("stdlib") or os.path.dirname(os.__file__), "python"))
    roots = [(os.path.realpath(folder), label) for folder, label in roots if folder]
    return sorted(roots, key=lambda root: len(root[0]), reverse=True)


def shown_path(path: str) -> str:
    """`path` as a client may see it."""
    if not os.path.isabs(path):
        return path
    real = os.path.realpath(path)
    for folder, label in _roots():
        if real == folder or real.startswith(folder + os.sep):
            inside = os.path.relpath(real, folder)
            return os.path.join(label, inside) if label else inside
    parts = real.split(os.sep)
    return os.path.join("...", *parts[-2:])


def client_traceback(exc: BaseException) -> List[str]:
    """The formatted traceback of `exc` (ComfyUI's `traceback` field), paths made relative."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return [_FILE_LINE.sub(lambda m: f'File "{shown_path(m.group(1))}"', line) for line in lines]


def client_traceback_lines(text: str) -> List[str]:
    """A traceback already formatted as text (e.g. a pack's import failure), as lines with relative paths."""
    return [_FILE_LINE.sub(lambda m: f'File "{shown_path(m.group(1))}"', line) for line in text.splitlines()]
