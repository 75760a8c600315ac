"""Tessera's HTTP entry point: `python server.py`.

For now this serves the health route and the node catalogue; the full ComfyUI-compatible API (queue, websocket,
history, files) is built on the same app factory.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from aiohttp import web

from graph.catalogue import Catalogue
from nodes import builtin_catalogue

log = logging.getLogger("tessera")

CATALOGUE_KEY = web.AppKey("catalogue", Catalogue)


def add_route(app: web.Application, method: str, path: str, handler) -> None:
    """Every API route is served bare and under /api (DESIGN.md §3)."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, "/api" + path, handler)


async def health(request: web.Request) -> web.Response:
    catalogue = request.app[CATALOGUE_KEY]
    return web.json_response({"status": "ok", "nodes": len(catalogue)})


async def object_info(request: web.Request) -> web.Response:
    return web.json_response(request.app[CATALOGUE_KEY].object_info())


async def object_info_one(request: web.Request) -> web.Response:
    name = request.match_info["node_class"]
    info = request.app[CATALOGUE_KEY].object_info(only=name)
    if not info:
        return web.json_response({"error": f"unknown node class {name!r}"}, status=404)
    return web.json_response(info)


def create_app(catalogue: Optional[Catalogue] = None) -> web.Application:
    app = web.Application()
    app[CATALOGUE_KEY] = catalogue if catalogue is not None else builtin_catalogue()
    add_route(app, "GET", "/health", health)
    add_route(app, "GET", "/object_info", object_info)
    add_route(app, "GET", "/object_info/{node_class}", object_info_one)
    return app


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tessera: a node-graph workflow engine for Stable Diffusion")
    parser.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8188, help="port to listen on (default 8188)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.listen not in ("127.0.0.1", "localhost", "::1"):
        print(f"error: refusing to listen on {args.listen}: only loopback is allowed until authentication "
              f"is configured (DESIGN.md §8)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    app = create_app()
    print(f"Tessera listening on http://{args.listen}:{args.port}", flush=True)
    web.run_app(app, host=args.listen, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
