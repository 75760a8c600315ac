"""Issue 14: ComfyUI's official frontend (comfyui-frontend-package) served by Tessera with `--front-end comfyui`:
load to interactive, headless Debian chromium through Playwright, against the real server with the built-in
catalogue. Each run is a fresh browser context (cold cache, a returning user's settings). The time is navigation
start -> the app is ready (`window.app.vueAppReady`, the graph canvas present and the node definitions registered),
read in the page with performance.now(); and the same after a reload (the browser's cache warm). Also counted:
requests our server answered with an error.
Target: <= 2 s.

    python bench/comfyui_frontend.py [--runs 5] [--json] [--url URL]

--url measures a server that is already running instead (e.g. ComfyUI itself serving the same package, for
comparison); its user should have the same settings (Comfy.TutorialCompleted).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.server_harness import ServerProcess  # noqa: E402
from tests.web.helpers import launch_chromium  # noqa: E402

READY = ("() => window.app && window.app.vueAppReady && document.querySelector('#graph-canvas') && "
         "window.LiteGraph && LiteGraph.registered_node_types && "
         "Object.keys(LiteGraph.registered_node_types).length > 100")


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--url", default=None, help="measure this running server instead of starting ours")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    base = tempfile.mkdtemp(prefix="tessera_fe_bench_")
    os.makedirs(os.path.join(base, "user", "default"), exist_ok=True)
    with open(os.path.join(base, "user", "default", "comfy.settings.json"), "w", encoding="utf-8") as f:
        json.dump({"Comfy.TutorialCompleted": True}, f)
    server = None if args.url else ServerProcess(base, ["--front-end", "comfyui"], packs=()).start()
    url = args.url.rstrip("/") if args.url else server.url
    times, warm, errors = [], [], []
    try:
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            for _ in range(args.runs + 1):  # the first run warms the server's caches and is not counted
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                bad = []
                page.on("response", lambda r: bad.append(r.url) if r.status >= 400 and r.url.startswith(
                    url) and not r.url.endswith(("user.css", "comfy.templates.json")) else None)
                page.goto(url + "/")
                page.wait_for_function(READY, timeout=60000, polling=10)
                times.append(page.evaluate("() => performance.now()") / 1000.0)
                errors.append(len(bad))
                page.reload()  # a returning visit: the browser's cache holds the frontend's files
                page.wait_for_function(READY, timeout=60000, polling=10)
                warm.append(page.evaluate("() => performance.now()") / 1000.0)
                context.close()
            browser.close()
    finally:
        if server is not None:
            server.stop()
    times, warm, errors = times[1:], warm[1:], errors[1:]
    result = {"runs": args.runs, "load_to_interactive_s_median": round(statistics.median(times), 3),
              "load_to_interactive_s_max": round(max(times), 3),
              "reload_to_interactive_s_median": round(statistics.median(warm), 3), "failed_requests": max(errors)}
    print(json.dumps(result) if args.json else
          f"official frontend load to interactive: median {result['load_to_interactive_s_median']} s, max "
          f"{result['load_to_interactive_s_max']} s over {args.runs} runs (cold cache); reload "
          f"{result['reload_to_interactive_s_median']} s; failed requests {result['failed_requests']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
