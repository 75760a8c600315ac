"""Which real custom node packs load, and how many of their nodes register (the issue 13 table in RESULTS.md).

    python bench/pack_loading.py PACKS_DIR [--deps DIR]

PACKS_DIR holds pack folders as a user's custom_nodes would (e.g. snapshots brought in with the library's `fetch`);
`--deps` is a folder with the packs' requirements installed (`pip install --target DIR ...`), appended to sys.path
so that the engine's own environment stays as it is. Each pack is imported into a fresh engine exactly as the
server does (compat.packs.load_packs, a PromptServer present for packs that register routes). Prints one table
row per pack: nodes registered / defined in NODE_CLASS_MAPPINGS, and the error that stopped it or its classes.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip()[:160] if lines else ""


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packs_dir")
    parser.add_argument("--deps", default=None, help="a folder with the packs' requirements installed")
    args = parser.parse_args(argv)
    if args.deps:
        sys.path.append(os.path.abspath(args.deps))
    logging.basicConfig(level=logging.CRITICAL)

    from aiohttp import web

    from compat.packs import load_packs
    from compat.prompt_server import PromptServer
    from model_management.services import Services
    from nodes import builtin_catalogue

    services = Services.for_directory(tempfile.mkdtemp(prefix="tessera_packs_"))
    PromptServer(None, web.Application())
    results = load_packs([args.packs_dir], builtin_catalogue(), services)
    print("| pack | registered / defined | what stops it |")
    print("|---|---|---|")
    for result in results:
        if result.ok:
            defined = len(result.node_names) + len(result.class_errors)
            problem = "; ".join(f"{name}: {_last_line(err)}" for name, err in list(result.class_errors.items())[:3])
            print(f"| {result.name} | {len(result.node_names)} / {defined} | {problem or '—'} |")
        else:
            print(f"| {result.name} | import fails | {_last_line(result.error)} |")
    loaded = sum(1 for r in results if r.ok and not r.class_errors)
    print(f"\n{loaded} of {len(results)} packs load with every node registered")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
