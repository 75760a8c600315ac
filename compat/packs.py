"""Loading custom node packs: ComfyUI-style packages and single files from the custom_nodes folders.

First every pack's `prestartup_script.py` runs (before any pack is imported, as ComfyUI does). Then each pack is
imported under its own name (registered in sys.modules before it runs, so relative imports inside a package work),
after `compat.install` has made the legacy modules packs import (`folder_paths`, `comfy.utils`, ...) available. Its
NODE_CLASS_MAPPINGS classes -- V1 classes and V3 `io.ComfyNode` classes alike -- are compiled into the catalogue;
a pack with `comfy_entrypoint()` (a ComfyExtension) adds the V3 classes its `get_node_list()` names.
NODE_DISPLAY_NAME_MAPPINGS and WEB_DIRECTORY are recorded. A pack that raises while importing is logged with its
traceback, reported with ok=False and skipped; a single broken class is skipped alone (docs/architecture.md §8).
Built-in node names are never replaced by a pack.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Dict, Iterable, List, Optional, Union

from compat import comfy_nodes
from graph.catalogue import Catalogue
from nodes.v1_adapter import compile_v1

logger = logging.getLogger(__name__)

_PACK_MARK = "_tessera_pack_path"  # set on a pack's module: which file or folder it was loaded from


@dataclass
class PackResult:
    name: str
    path: str
    ok: bool
    error: Optional[str] = None  # traceback text when the pack failed to import
    node_names: List[str] = field(default_factory=list)
    web_directory: Optional[str] = None  # absolute path of the pack's WEB_DIRECTORY, when it exists
    class_errors: Dict[str, str] = field(default_factory=dict)  # class name -> why it was skipped
    module_name: Optional[str] = None  # the sys.modules name it was imported as
    seconds: float = 0.0


def discover(directory: str) -> List[tuple]:
    """(name, path, is_package) for each pack in `directory`, sorted by name."""
    found = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found
    for entry in entries:
        if entry.startswith(".") or entry.startswith("__") or entry.endswith(".disabled"):
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "__init__.py")):
                found.append((entry, path, True))
        elif entry.endswith(".py"):
            found.append((entry[:-3], path, False))
    return found


def load_packs(directories: Union[str, Iterable[str]], catalogue: Catalogue, services: Any,
               disabled: bool = False) -> List[PackResult]:
    """Import every pack in `directories` into `catalogue`; one PackResult per pack (failures included)."""
    if disabled:
        return []
    import compat  # noqa: PLC0415 - the package this module belongs to

    compat.install(services, catalogue)
    from compat.prompt_server import PromptServer  # noqa: PLC0415

    if PromptServer.instance is None:  # packs register routes at import; headless, nobody serves them
        from aiohttp import web  # noqa: PLC0415
        PromptServer(None, web.Application())
    if isinstance(directories, (str, os.PathLike)):
        directories = [directories]
    builtin_names = set(catalogue.names())
    directories = [os.fspath(d) for d in directories]
    for directory in directories:
        for name, path, is_package in discover(directory):
            if is_package:
                run_prestartup(name, path)
    results = []
    for directory in directories:
        for name, path, is_package in discover(os.fspath(directory)):
            results.append(load_pack(name, path, is_package, catalogue, builtin_names))
            _refresh_compat_mappings()  # packs imported next may read the classes of this one
    _adopt_extension_web_dirs(results)
    loaded = sum(1 for r in results if r.ok)
    if results:
        logger.info("custom node packs: %d loaded, %d failed", loaded, len(results) - loaded)
    return results


def load_pack(name: str, path: str, is_package: bool, catalogue: Catalogue,
              builtin_names: Optional[set] = None) -> PackResult:
    """Import one pack and register its nodes; never raises for the pack's own faults."""
    started = time.perf_counter()
    result = PackResult(name, os.path.abspath(path), ok=False)
    try:
        module = _import(name, result.path, is_package, result)
    except BaseException as exc:  # SystemExit/KeyboardInterrupt from a pack's import must not stop the engine
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.error = traceback.format_exc()
        result.seconds = time.perf_counter() - started
        logger.error("Cannot import custom node pack %s (%s):\n%s", name, result.path, result.error)
        return result
    base = result.path if is_package else os.path.dirname(result.path)
    result.web_directory = _web_directory(module, base)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    entrypoint = getattr(module, "comfy_entrypoint", None)
    if not isinstance(mappings, dict) and not callable(entrypoint):
        result.error = f"{name} defines no NODE_CLASS_MAPPINGS dict and no comfy_entrypoint; nothing to load"
        logger.warning("Skipping custom node pack %s: %s", result.path, result.error)
        result.seconds = time.perf_counter() - started
        return result
    display = getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None)
    display = display if isinstance(display, dict) else {}
    for class_name, cls in (mappings or {}).items():
        _register_class(str(class_name), cls, name, display, catalogue, builtin_names or set(), result)
    if callable(entrypoint):
        try:
            classes = _extension_nodes(entrypoint)
        except Exception:
            result.error = traceback.format_exc()
            result.seconds = time.perf_counter() - started
            logger.error("Custom node pack %s: comfy_entrypoint failed:\n%s", name, result.error)
            return result
        for cls in classes:
            _register_class(_schema_id(cls), cls, name, display, catalogue, builtin_names or set(), result)
    result.ok = True
    result.seconds = time.perf_counter() - started
    return result


def _register_class(class_name: str, cls: Any, pack: str, display: dict, catalogue: Catalogue,
                    builtin_names: set, result: PackResult) -> None:
    if class_name in builtin_names:
        result.class_errors[class_name] = f"{class_name!r} is a built-in node; the pack's class is ignored"
        logger.warning("Custom node pack %s: %s", pack, result.class_errors[class_name])
        return
    shown = display.get(class_name)
    from compat.v3_adapter import compile_v3, is_v3  # noqa: PLC0415 - importable once compat is installed

    compile_class = compile_v3 if is_v3(cls) else compile_v1
    try:
        spec = compile_class(cls, class_name, python_module=f"custom_nodes.{pack}",
                             display_name=shown if isinstance(shown, str) else None)
    except Exception:
        result.class_errors[class_name] = traceback.format_exc()
        logger.error("Custom node pack %s: skipping node %s:\n%s", pack, class_name,
                     result.class_errors[class_name])
        return
    if class_name in catalogue:
        logger.warning("Custom node pack %s replaces node %s from another pack", pack, class_name)
    catalogue.add(_comfy_facing(spec))
    if isinstance(shown, str):
        catalogue.display_names[class_name] = shown
    result.node_names.append(class_name)


def _comfy_facing(spec: Any) -> Any:
    """The spec with CONTROL_NET inputs handed to the pack as ComfyUI's classes: a control model from Tessera's
    loader nodes arrives as a comfy.controlnet ControlNet / ControlLora / T2IAdapter over the same network, so
    packs that test `type(control) == ControlNet` or subclass it (Advanced-ControlNet) treat it as ComfyUI's."""
    names = {item.name for item in spec.inputs if item.type == "CONTROL_NET"}
    if not names:
        return spec
    from comfy.controlnet import from_engine  # noqa: PLC0415 - importable once compat is installed
    inner = spec.execute

    def convert(value: Any) -> Any:
        return [from_engine(v) for v in value] if isinstance(value, list) else from_engine(value)

    def execute(instance: Any, ctx: Any, kwargs: dict) -> Any:
        return inner(instance, ctx, {k: convert(v) if k in names else v for k, v in kwargs.items()})
    return dataclasses.replace(spec, execute=execute)


def _adopt_extension_web_dirs(results: List[PackResult]) -> None:
    """Folders packs put in `nodes.EXTENSION_WEB_DIRS` under their own name become their web directory."""
    from compat import _runtime  # noqa: PLC0415

    by_name = {r.name: r for r in results}
    for name, folder in _runtime.state.extension_web_dirs.items():
        pack = by_name.get(name)
        if pack is not None and pack.ok and pack.web_directory is None and os.path.isdir(str(folder)):
            pack.web_directory = os.path.abspath(str(folder))
        elif pack is None:
            logger.warning("EXTENSION_WEB_DIRS names %r, which is not a loaded pack; not served", name)


def run_prestartup(name: str, path: str) -> bool:
    """Run a pack's `prestartup_script.py` (if it has one) as its own module; a failure is logged, never raised."""
    script = os.path.join(path, "prestartup_script.py")
    if not os.path.isfile(script):
        return False
    try:
        spec = importlib.util.spec_from_file_location(f"tessera_prestartup_{name.replace('.', '_x_')}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except BaseException:  # noqa: BLE001 - a pack's script must not stop the engine
        logger.error("prestartup_script of custom node pack %s failed:\n%s", name, traceback.format_exc())
        return False
    return True


def _run_coroutine(make: Any) -> Any:
    """Run `make()` (a coroutine) to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc
    worker = threading.Thread(target=run, name="tessera-pack-entrypoint")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _extension_nodes(entrypoint: Any) -> list:
    """The node classes of a ComfyExtension pack: `await comfy_entrypoint()`, `on_load()`, `get_node_list()`."""
    async def collect() -> list:
        extension = entrypoint()
        if asyncio.iscoroutine(extension):
            extension = await extension
        loaded = extension.on_load()
        if asyncio.iscoroutine(loaded):
            await loaded
        classes = extension.get_node_list()
        if asyncio.iscoroutine(classes):
            classes = await classes
        return list(classes or ())
    return _run_coroutine(collect)


def _schema_id(cls: Any) -> str:
    try:
        return str(cls.GET_SCHEMA().node_id)
    except Exception:  # reported when the class is compiled
        return getattr(cls, "__name__", repr(cls))


def _module_name(name: str, path: str) -> str:
    """The sys.modules name for a pack: its own name, unless that is taken by a different module (one of the
    engine's own packages, a library, ...), in which case a private name keeps both working."""
    module_name = name.replace(".", "_x_")
    existing = sys.modules.get(module_name)
    if existing is None or getattr(existing, _PACK_MARK, None) == path:
        return module_name
    logger.warning("Custom node pack %s: the module name %r is taken; importing it as %r", path, module_name,
                   f"tessera_pack_{module_name}")
    return f"tessera_pack_{module_name}"


def _forget(module_name: str) -> None:
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]


def _import(name: str, path: str, is_package: bool, result: PackResult) -> ModuleType:
    module_name = _module_name(name, path)
    result.module_name = module_name
    _forget(module_name)  # a reload of the same pack runs it afresh
    if is_package:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot build an import spec for {path}")
    module = importlib.util.module_from_spec(spec)
    setattr(module, _PACK_MARK, path)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget(module_name)
        raise
    return module


def _web_directory(module: ModuleType, base: str) -> Optional[str]:
    web = getattr(module, "WEB_DIRECTORY", None)
    if not isinstance(web, str) or not web:
        return None
    full = os.path.abspath(os.path.join(base, web))
    if not os.path.isdir(full):
        logger.warning("Custom node pack %s: WEB_DIRECTORY %s is not a folder", base, full)
        return None
    return full


def _refresh_compat_mappings() -> None:
    """Bring `nodes.NODE_CLASS_MAPPINGS` (the dict packs may have kept a reference to) up to date."""
    comfy_nodes.class_mappings()
    comfy_nodes.display_mappings()
