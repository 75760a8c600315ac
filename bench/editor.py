"""Editor benchmark (issue 8): load to interactive with a 500-node catalogue, and frame times while dragging a node
with 300 nodes on the canvas. Headless Debian chromium through Playwright, against the real server.

- Load: /object_info is the server's real catalogue padded with synthetic node types to 500 entries (intercepted with
  page.route, so the server itself is unchanged). Each run is a fresh browser context (no autosave, cold module
  cache); the time is navigation start -> `document.body.dataset.ready = "1"` (app.ready resolved), read in the page
  with performance.now() by a MutationObserver. Also reported: -> running panel and extensions installed.
- Drag: a 300-node UI workflow (chains of linked nodes, so links move too) is loaded; one node is dragged by its title
  with real mouse events (one move per step). Per frame with a pointer move, in the page: the main-thread busy time =
  the move's input handlers + the frame's rAF callbacks, style, layout and paint (from our rAF callback to a
  MessageChannel message posted from it, which runs after rendering); idle waits for vsync are not counted. The
  target applies to the busy time; the rAF interval shows the frame rate headless chromium achieved.
Targets: load <= 1 s, frame time <= 16 ms.

    python bench/editor.py [--runs 5] [--nodes 300] [--catalogue 500] [--json]
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

READY_PROBE = """
window.__bench = {};
new MutationObserver(() => {
  const body = document.body;
  if (!body) return;
  if (body.dataset.ready === '1' && window.__bench.ready == null) window.__bench.ready = performance.now();
  if (body.dataset.extensions === 'loaded' && window.__bench.installed == null) {
    window.__bench.installed = performance.now();
  }
}).observe(document, {subtree: true, attributes: true, childList: true});
"""

FRAME_PROBE = """() => {
  // main-thread work per frame = input handling (pointermove capture on window -> the same event bubbling back to
  // window, around every handler on the way) + the frame itself (our rAF callback, registered first, -> a message posted
  // from it, which runs once rAF callbacks, style, layout and paint are done). Idle waits for vsync are not counted.
  const frames = window.__frames = {intervals: [], busy: [], input: [], render: [], moves: 0};
  let inputStart = null, inputWork = 0, last = null;
  window.addEventListener('pointermove', () => { frames.moves++; inputStart = performance.now(); }, {capture: true});
  window.addEventListener('pointermove', () => {
    if (inputStart !== null) inputWork += performance.now() - inputStart;
    inputStart = null;
  });
  window.__recording = true;
  const loop = (ts) => {
    if (!window.__recording) return;
    const start = performance.now();
    const input = inputWork;
    inputWork = 0;
    if (last !== null) frames.intervals.push(ts - last);
    last = ts;
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      if (input === 0) return;  // frames without a pointer move are not drag frames
      const render = performance.now() - start;
      frames.input.push(input);
      frames.render.push(render);
      frames.busy.push(input + render);
    };
    channel.port2.postMessage(0);
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}"""

SOCKET_TYPES = ["MODEL", "CLIP", "VAE", "CONDITIONING", "LATENT", "IMAGE", "MASK", "CONTROL_NET"]


def synthetic_entry(i: int) -> dict:
    """A plausible node definition: a few sockets, numbers, a combo and a string, in one of 25 categories."""
    required = {f"in_{k}": [SOCKET_TYPES[(i + k) % len(SOCKET_TYPES)]] for k in range(i % 3 + 1)}
    required.update({
        "amount": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": "how much"}],
        "count": ["INT", {"default": 4, "min": 1, "max": 64}],
        "mode": [[f"mode_{m}" for m in range(6)], {"default": "mode_0"}],
        "label": ["STRING", {"default": f"synthetic {i}", "multiline": i % 5 == 0}],
    })
    outputs = [SOCKET_TYPES[(i + k * 3) % len(SOCKET_TYPES)] for k in range(i % 2 + 1)]
    return {"input": {"required": required, "optional": {}}, "input_order": {"required": list(required)},
            "output": outputs, "output_is_list": [False] * len(outputs), "output_name": outputs,
            "name": f"BenchNode{i:03d}", "display_name": f"Bench Node {i:03d}",
            "description": f"Synthetic node {i} for the editor benchmark.", "python_module": "bench",
            "category": f"bench/group_{i % 25:02d}", "output_node": False}


def padded_catalogue(real: dict, size: int) -> dict:
    catalogue = dict(real)
    i = 0
    while len(catalogue) < size:
        catalogue[f"BenchNode{i:03d}"] = synthetic_entry(i)
        i += 1
    return catalogue


def big_workflow(count: int) -> dict:
    """`count` nodes on a grid; each row is a chain LatentUpscaleBy -> LatentUpscaleBy -> ... so links move too."""
    nodes, links = [], []
    per_row = 20
    for i in range(count):
        node_id = i + 1
        row, col = divmod(i, per_row)
        inputs = [{"name": "samples", "type": "LATENT", "link": None}]
        outputs = [{"name": "LATENT", "type": "LATENT", "links": [], "slot_index": 0}]
        if col > 0:
            link_id = len(links) + 1
            links.append([link_id, node_id - 1, 0, node_id, 0, "LATENT"])
            inputs[0]["link"] = link_id
            nodes[-1]["outputs"][0]["links"].append(link_id)
        nodes.append({"id": node_id, "type": "LatentUpscaleBy", "pos": [col * 340, row * 160], "size": [300, 110],
                      "flags": {}, "order": i, "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": {}, "widgets_values": ["nearest-exact", 1.5]})
    return {"last_node_id": count, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {}, "version": 0.4}


def measure_load(browser, url: str, catalogue: dict, runs: int) -> dict:
    body = json.dumps(catalogue)
    ready, installed = [], []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.route("**/object_info", lambda route: route.fulfill(body=body, content_type="application/json"))
        context.route("**/api/object_info", lambda route: route.fulfill(body=body, content_type="application/json"))
        page = context.new_page()
        page.add_init_script(READY_PROBE)
        page.goto(url + "/")
        page.wait_for_function("window.__bench && window.__bench.installed != null", timeout=30000)
        count = page.evaluate("Object.keys(window.tessera.catalogue).length")
        assert count == len(catalogue), f"the editor saw {count} node types, not {len(catalogue)}"
        times = page.evaluate("window.__bench")
        ready.append(times["ready"])
        installed.append(times["installed"])
        context.close()
    return {"ready_ms": statistics.median(ready), "ready_all_ms": [round(t, 1) for t in ready],
            "installed_ms": statistics.median(installed)}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure_drag(browser, url: str, count: int, steps: int = 150) -> dict:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.goto(url + "/")
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
    page.evaluate("wf => { window.tessera.loadWorkflow(wf); window.tessera.view.fitView(); }", big_workflow(count))
    page.wait_for_function(f"document.querySelectorAll('#graph-canvas .node').length === {count}", timeout=30000)
    links = page.locator("path.link").count()
    title = page.locator('#graph-canvas .node[data-id="2"] .node-title')
    box = title.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    if os.environ.get("EDITOR_BENCH_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["EDITOR_BENCH_SHOTS"], "before-drag.png"))
    page.wait_for_timeout(300)
    page.evaluate(FRAME_PROBE)
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x + i * 3, y + i * 1.5)
    page.mouse.up()
    page.wait_for_timeout(100)
    page.evaluate("window.__recording = false")
    frames = page.evaluate("window.__frames")
    moved = page.evaluate("(() => { const n = window.tessera.graph.nodes.get(2) || window.tessera.graph.nodes.get('2');"
                          " return n.pos; })()")
    context.close()
    assert list(moved) != [340, 0], f"the dragged node did not move: {moved}"
    busy, intervals = frames["busy"], frames["intervals"]
    assert busy, "no frames were recorded during the drag"
    return {"nodes": count, "links": links, "moves": frames["moves"], "frames_with_input": len(busy),
            "busy_median_ms": statistics.median(busy), "busy_p95_ms": percentile(busy, 0.95),
            "busy_max_ms": max(busy), "input_median_ms": statistics.median(frames["input"]),
            "render_median_ms": statistics.median(frames["render"]), "interval_median_ms": statistics.median(intervals),
            "interval_p95_ms": percentile(intervals, 0.95), "dragged_to": moved}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="page loads (median reported)")
    parser.add_argument("--nodes", type=int, default=300, help="nodes on the canvas for the drag")
    parser.add_argument("--catalogue", type=int, default=500, help="node types in /object_info for the load")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tessera-editor-bench-") as base:
        server = ServerProcess(base, packs=()).start()
        try:
            _, real = server.json("GET", "/object_info")
            catalogue = padded_catalogue(real, args.catalogue)
            with sync_playwright() as playwright:
                browser = launch_chromium(playwright)
                try:
                    load = measure_load(browser, server.url, catalogue, args.runs)
                    drag = measure_drag(browser, server.url, args.nodes)
                finally:
                    browser.close()
        finally:
            server.stop()
    result = {"catalogue": len(catalogue), "runs": args.runs, "load": load, "drag": drag}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Editor in headless chromium ({len(catalogue)}-node catalogue, {args.nodes} nodes on the canvas)\n")
    print("| measure | value | target |")
    print("|---|---:|---:|")
    print(f"| load → app.ready (median of {args.runs}) | {load['ready_ms']:.0f} ms | ≤ 1000 ms |")
    print(f"| load → running panel + extensions installed | {load['installed_ms']:.0f} ms | |")
    print(f"| drag frame busy time, median | {drag['busy_median_ms']:.1f} ms | ≤ 16 ms |")
    print(f"| drag frame busy time, p95 | {drag['busy_p95_ms']:.1f} ms | ≤ 16 ms |")
    print(f"| drag frame busy time, max | {drag['busy_max_ms']:.1f} ms | |")
    print(f"| of which input handlers / rAF+style+layout+paint, medians | {drag['input_median_ms']:.1f} / "
          f"{drag['render_median_ms']:.1f} ms | |")
    print(f"| rAF interval while dragging, median / p95 | {drag['interval_median_ms']:.1f} / "
          f"{drag['interval_p95_ms']:.1f} ms | |")
    print(f"\nload runs (ms): {load['ready_all_ms']}; drag: {drag['moves']} pointer moves over "
          f"{drag['frames_with_input']} frames, {drag['links']} links on the canvas")
    return 0


if __name__ == "__main__":
    sys.exit(main())
