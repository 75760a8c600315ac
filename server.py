"""Tessera's entry point: `python server.py` serves the ComfyUI-compatible HTTP/websocket API (docs/architecture.md §4.1);
`python server.py --run WORKFLOW.json` runs one workflow headless and exits.

This module parses the command line and assembles the app: folders and services, the catalogue (built-in nodes
plus custom node packs), the durable queue, the worker thread, the websocket hub and the routes in api/.
"""
from __future__ import annotations

from model_management.host_allocator import configure_host_allocator

HOST_ALLOCATOR = configure_host_allocator()  # before torch and the rest allocate

import argparse  # noqa: E402
import gc
import ipaddress
import logging
import os
import sys
import threading
from typing import List, Optional

from aiohttp import web

from api import (routes_files, routes_frontend, routes_info, routes_internal, routes_model_library, routes_queue,
                 routes_userdata)
from api.log_buffer import LogBuffer
from api.security import make_middlewares
from api.state import STATE, ServerState, state_of
from api.user_store import UserStore
from api.websocket import ClientHub, ServerSink
from compat.prompt_server import BinaryEventTypes, PromptServer, api_prefixed  # noqa: F401 - for packs
from execution.job_store import JobStore
from execution.scheduler import Executor
from execution.worker import Worker
from scaleout.engine import cache_from, load_catalogue, precision_flag_values, services_from  # noqa: F401

log = logging.getLogger("tessera")

HERE = os.path.dirname(os.path.abspath(__file__))
WEB_ROOT = os.path.join(HERE, "web")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tessera: a node-graph workflow engine for Stable Diffusion")
    p.add_argument("--listen", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8188, help="port to listen on (default 8188)")
    p.add_argument("--base-directory", default=HERE, help="root of output/, input/, temp/, user/, models/")
    p.add_argument("--output-directory", help="where SaveImage writes (default BASE/output)")
    p.add_argument("--input-directory", help="where LoadImage reads and uploads go (default BASE/input)")
    p.add_argument("--temp-directory", help="where previews go (default BASE/temp)")
    p.add_argument("--user-directory", help="settings and the job database (default BASE/user)")
    p.add_argument("--front-end", choices=("tessera", "comfyui"), default="tessera",
                   help="the editor served at /: Tessera's own (default) or ComfyUI's official frontend (the "
                        "comfyui-frontend-package; pip install -e \".[comfyui-frontend]\")")
    p.add_argument("--front-end-root", default=None, help="serve this built frontend folder at / instead")
    p.add_argument("--multi-user", action="store_true",
                   help="separate settings and files per user, chosen by the comfy-user request header")
    p.add_argument("--extra-model-paths-config", action="append", default=[], metavar="YAML",
                   help="an extra_model_paths.yaml with more model folders (may be repeated)")
    p.add_argument("--cpu", action="store_true", help="run everything on the CPU")
    vram = p.add_mutually_exclusive_group()
    vram.add_argument("--highvram", dest="vram_mode", action="store_const", const="highvram",
                      help="keep whole models on the GPU; never stream weights")
    vram.add_argument("--normalvram", dest="vram_mode", action="store_const", const="normalvram",
                      help="keep recently used models on the GPU, evicting only as needed (default)")
    vram.add_argument("--lowvram", dest="vram_mode", action="store_const", const="lowvram",
                      help="let a model use at most half the GPU's memory; stream the rest of its weights")
    vram.add_argument("--novram", dest="vram_mode", action="store_const", const="novram",
                      help="stream every layer's weights to the GPU as it runs")
    add_precision_flags(p)
    p.add_argument("--reserve-vram", type=float, metavar="GB", help="GPU memory to leave for other programs")
    p.add_argument("--simulate-vram", type=float, metavar="GB",
                   help="testing: pretend the CPU is a GPU with this much memory (weights are really copied, "
                        "evicted and streamed)")
    p.add_argument("--keep-alive", type=float, metavar="SECONDS",
                   help="unload a model (RAM and GPU) after it was unused this long (default: keep it until the "
                        "memory is needed)")
    p.add_argument("--ram-budget", type=float, metavar="GB",
                   help="RAM for resident model weights (default: half the machine's memory)")
    p.add_argument("--preview-method", choices=["auto", "latent2rgb", "none"], default="none",
                   help="live previews while sampling for jobs that do not ask (extra_data.preview_method); default "
                        "none, so API clients get only results as binary frames; the editor asks per job")
    cache = p.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="keep what the latest job used (default)")
    cache.add_argument("--cache-lru", type=int, metavar="N",
                       help="keep what the last N jobs used (0, ComfyUI's default, means the classic cache)")
    cache.add_argument("--cache-ram", type=float, nargs="?", const=4.0, metavar="GB",
                       help="keep outputs while this much RAM stays free (default 4 GB)")
    cache.add_argument("--cache-none", action="store_true", help="keep no outputs between jobs")
    p.add_argument("--disable-all-custom-nodes", action="store_true", help="load no custom node packs")
    p.add_argument("--max-upload-size", type=float, default=100, metavar="MB", help="upload limit (default 100)")
    p.add_argument("--auth-token", default=os.environ.get("TESSERA_AUTH_TOKEN"),
                   help="require this bearer token on every request (needed to listen beyond loopback)")
    p.add_argument("--insecure-allow-remote-without-auth", action="store_true",
                   help="allow --listen on a non-loopback address without --auth-token (not recommended)")
    p.add_argument("--requeue-running", action="store_true",
                   help="after a crash, put the job that was running back in the queue instead of failing it")
    add_scaleout_flags(p)
    p.add_argument("--max-history", type=int, default=10000, help="finished jobs kept in history")
    p.add_argument("--verbose", action="store_true", help="log debug messages")
    p.add_argument("--run", metavar="WORKFLOW", help="run this API- or UI-format workflow file and exit")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="with --run: override an input (may be repeated)")
    return p.parse_args(argv)


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """ComfyUI's precision flags (model_management/precision_policy.py has the default they override)."""
    whole = p.add_mutually_exclusive_group()
    whole.add_argument("--force-fp32", action="store_true",
                       help="compute every model part in fp32 (the images of full precision, bit for bit)")
    whole.add_argument("--force-fp16", action="store_true", help="compute every model part in fp16")
    for kind, what in (("unet", "the diffusion model (and ControlNets)"), ("vae", "the VAE"),
                       ("text-enc", "the text encoders")):
        group = p.add_mutually_exclusive_group()
        for name in ("fp32", "bf16", "fp16"):
            group.add_argument(f"--{name}-{kind}", action="store_true", help=f"store and run {what} in {name}")


def add_scaleout_flags(p: argparse.ArgumentParser) -> None:
    """Scale-out on Ray (docs/scaleout.md): the server becomes a front, jobs run on worker actors."""
    p.add_argument("--workers", metavar="ray[:ADDRESS]",
                   help="run jobs on Ray workers: `ray` starts a local Ray instance, `ray:ADDRESS` joins a cluster "
                        "(`ray:auto`, `ray:HOST:6379`, `ray:ray://HOST:10001`); pip install -e \".[ray]\"")
    p.add_argument("--worker-count", type=int, metavar="N",
                   help="with --workers: how many workers (default one per GPU, else one per --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="N",
                   help="with --workers: CPU cores each worker reserves (default 1)")
    p.add_argument("--gpus-per-worker", type=float, metavar="N",
                   help="with --workers: GPUs each worker reserves (default 1 when the cluster has GPUs)")
    p.add_argument("--spread-after", type=int, default=3, metavar="N",
                   help="with --workers: a job waits for the busy worker that holds its models unless N jobs "
                        "already wait for it; then an idle worker loads them too (default 3)")
    p.add_argument("--shared-output", action="store_true",
                   help="with --workers: the temp folder is on storage every worker host mounts at the same path; "
                        "workers stage output files there and the front moves them into its output folder "
                        "instead of receiving their bytes through Ray")
    p.add_argument("--keep-client-order", action="store_true",
                   help="with --workers: each client's jobs start in queue order (`front` first, numbering as "
                        "without workers); routing then reorders jobs only across clients. Jobs on different "
                        "workers may still finish out of order")


def scaleout_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with --workers and its flags, said before anything loads; None when nothing."""
    from scaleout.pool import PoolSettings
    try:
        PoolSettings.from_args(args)
    except ValueError as exc:
        return str(exc)
    if args.worker_count is not None and args.worker_count < 1:
        return f"--worker-count {args.worker_count}: need at least 1"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "--workers ray: Ray is not installed; pip install -e \".[ray]\" (or pip install ray)"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


NETWORK_MODULES = ("transformers.models.clip.modeling_clip", "diffusion.text", "diffusion.unet.model",
                   "diffusion.vae.model", "model_management.checkpoints")


def create_app(args: argparse.Namespace) -> web.Application:
    services = services_from(args)
    app = web.Application(client_max_size=int(args.max_upload_size * 1024 * 1024),
                          middlewares=make_middlewares(args.auth_token))
    hub = ClientHub({"supports_preview_metadata": True,
                     "max_upload_size": int(args.max_upload_size * 1024 * 1024)})
    store = JobStore(os.path.join(services.paths.user_dir, "tessera.db"), args.requeue_running, args.max_history)
    state = ServerState(args, services, None, None, store, hub)
    state.users = UserStore(services.paths.user_dir, multi_user=args.multi_user)
    state.logs = LogBuffer(hub)
    logging.getLogger().addHandler(state.logs)
    app[routes_frontend.TEMPLATE_FOLDERS] = routes_frontend.template_folders()
    app[STATE] = state
    compat_server = PromptServer(state, app)  # before packs load: they register routes on it
    catalogue, packs = load_catalogue(args, services)
    state.catalogue, state.packs = catalogue, packs
    state.executor = Executor(catalogue, cache_from(args), services)

    def observe(event: str, data: dict) -> None:
        compat_server.observe(event, data)

    def sink_for(job):
        compat_server.client_id = job.client_id  # packs read PromptServer.instance.client_id while a job runs
        return ServerSink(hub, job.client_id, on_event=observe)

    if args.workers:
        from scaleout.pool import PoolSettings, RayPool
        folders = {"output": services.paths.output_dir, "temp": services.paths.temp_dir}
        state.worker = RayPool(store, catalogue, hub, sink_for, args, folders, PoolSettings.from_args(args),
                               state.broadcast_status)
    else:
        state.worker = Worker(store, state.executor, sink_for, state.broadcast_status, services)

    for method, path, handler in (routes_queue.ROUTES + routes_info.ROUTES + routes_files.ROUTES
                                  + routes_userdata.ROUTES + routes_model_library.ROUTES + routes_frontend.ROUTES):
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/api" + path, handler)
    for method, path, handler in routes_internal.ROUTES + routes_frontend.PLAIN_ROUTES:
        app.router.add_route(method, path, handler)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/api/health", health)
    for pack in packs:
        if pack.ok and pack.web_directory and os.path.isdir(pack.web_directory):
            app.router.add_static(f"/extensions/{pack.name}", pack.web_directory)
    app.router.add_routes(compat_server.routes)
    app.router.add_routes(api_prefixed(compat_server.routes))
    app[FRONT_END] = front_end_root(args)
    if os.path.isfile(os.path.join(app[FRONT_END], "index.html")):
        app.router.add_get("/", index)
        app.router.add_get("/{path:.+}", web_file)
    else:
        app.router.add_get("/", index_placeholder)

    async def on_startup(app: web.Application) -> None:
        import asyncio
        await hub.start()
        compat_server.loop = asyncio.get_running_loop()
        state.worker.start()
        # transformers' CLIP code takes seconds to import: done in the background once the server listens, under
        # the model manager's lock (a load meanwhile waits for it), so the first checkpoint load does not pay it
        threading.Thread(target=services.models.preload_code, args=(NETWORK_MODULES,), name="preload",
                         daemon=True).start()
        # Everything loaded so far (torch, nodes, packs) lives as long as the server: move it out of the cyclic
        # GC's sight, so full collections stay short and never stall requests for hundreds of milliseconds.
        gc.collect()
        gc.freeze()
        # the worker thread runs Python nodes; a shorter GIL switch interval keeps HTTP latency low meanwhile
        sys.setswitchinterval(0.001)

    async def on_cleanup(app: web.Application) -> None:
        logging.getLogger().removeHandler(state.logs)
        state.worker.stop()
        await hub.stop()
        store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = state_of(request)

    def resend_current(sid: str) -> None:
        for job, node in state.worker.running_nodes():
            if job.client_id == sid:
                state.hub.send_threadsafe("executing", {"node": node, "prompt_id": job.prompt_id}, sid)

    return await state.hub.handle(request, state.status_payload, resend_current)


async def health(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response({"status": "ok", "nodes": len(state.catalogue),
                              "queue_remaining": state.store.pending_count()})


FRONT_END = web.AppKey("tessera_front_end_root", str)


class FrontEndMissing(SystemExit):
    """--front-end / --front-end-root names a frontend that is not there."""


def front_end_root(args: argparse.Namespace) -> str:
    """The folder served at /: --front-end-root, the installed ComfyUI frontend package, or Tessera's editor."""
    if args.front_end_root:
        root = os.path.abspath(args.front_end_root)
        if not os.path.isfile(os.path.join(root, "index.html")):
            raise FrontEndMissing(f"--front-end-root {args.front_end_root}: no index.html there (point it at a "
                                  f"built frontend's folder)")
        return root
    if args.front_end == "comfyui":
        try:
            import comfyui_frontend_package
        except ImportError:
            raise FrontEndMissing("--front-end comfyui: the ComfyUI frontend is not installed; install it with "
                                  "pip install comfyui-frontend-package (or pip install -e \".[comfyui-frontend]\")"
                                  ) from None
        return os.path.join(os.path.dirname(comfyui_frontend_package.__file__), "static")
    return WEB_ROOT


async def web_file(request: web.Request) -> web.FileResponse:
    """A file of the served frontend; anything else is a JSON 404 like every other unknown route."""
    root = os.path.realpath(request.app[FRONT_END])
    full = os.path.realpath(os.path.join(root, request.match_info["path"]))
    if not full.startswith(root + os.sep) or not os.path.isfile(full):
        raise web.HTTPNotFound(text=f"{request.path}: not found")
    return web.FileResponse(full)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(request.app[FRONT_END], "index.html"))


async def index_placeholder(request: web.Request) -> web.Response:
    return web.Response(text="<!doctype html><title>Tessera</title><p>Tessera is running. The API is at "
                             "/prompt, /queue, /history and /ws.</p>", content_type="text/html")


def no_checkpoint_hint(paths) -> None:
    """A first start with no model at all: say where one goes and how to make a test one."""
    if any(paths.list_files(kind) for kind in ("checkpoints", "diffusion_models") if kind in paths.kinds()):
        return
    folder = paths.folder_paths("checkpoints")[0]
    print(f"No checkpoint found. Put a Stable Diffusion .safetensors file (SD1.x, SD2.x, SDXL) in {folder}\n"
          f"  or make a tiny random-weight test model there (its images are noise, but every workflow runs):\n"
          f"  python -m diffusion.synthetic_checkpoints sd1 "
          f"{os.path.join(folder, 'v1-5-pruned-emaonly.safetensors')}", flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    log.debug("host allocator: %s", HOST_ALLOCATOR)
    sys.modules.setdefault("server", sys.modules[__name__])  # packs `import server` for PromptServer
    if args.run:
        from execution.cli_runner import run_workflow_file
        PromptServer(None, web.Application())  # packs may register routes; headless, nobody serves them
        return run_workflow_file(args, services_from(args), load_catalogue)
    if not is_loopback(args.listen) and not args.auth_token and not args.insecure_allow_remote_without_auth:
        print(f"error: refusing to listen on {args.listen} without --auth-token (anyone on the network could run "
              f"jobs and read files); pass --auth-token TOKEN, or --insecure-allow-remote-without-auth",
              file=sys.stderr)
        return 2
    front_end_root(args)  # a missing frontend is said before anything loads
    if args.workers:
        problem = scaleout_problem(args)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    app = create_app(args)
    print(f"Tessera listening on http://{args.listen}:{args.port}", flush=True)
    no_checkpoint_hint(app[STATE].services.paths)
    web.run_app(app, host=args.listen, port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
