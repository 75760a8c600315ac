"""From an empty canvas to a picture: add the txt2img nodes through the search box, wire them with real mouse drags,
set the widgets, queue against the tiny SD1 checkpoint, watch progress, and find the final image on the SaveImage
node, in the gallery and (with the workflow embedded) on disk."""
import io
import json
import urllib.parse

from PIL import Image

from tests.web.conftest import CHECKPOINT
from tests.web.helpers import drag, node_locator, serious_problems, set_widget

# (node type, what to type in the search box, where to double-click on the canvas)
NODES = [
    ("CheckpointLoaderSimple", "load checkpoint", (30, 120)),
    ("CLIPTextEncode", "clip text encode", (380, 90)),
    ("CLIPTextEncode", "cliptextencode", (380, 380)),
    ("EmptyLatentImage", "empty latent", (380, 680)),
    ("KSampler", "ksampler", (740, 90)),
    ("VAEDecode", "vae decode", (740, 620)),
    ("SaveImage", "save image", (1060, 90)),
]

# (from node index, output slot, to node index, input name)
WIRES = [
    (0, 0, 4, "model"), (0, 1, 1, "clip"), (0, 1, 2, "clip"), (1, 0, 4, "positive"), (2, 0, 4, "negative"),
    (3, 0, 4, "latent_image"), (4, 0, 5, "samples"), (0, 2, 5, "vae"), (5, 0, 6, "images"),
]

WATCH_RUN = """() => {
  window.__seen = {executing: new Set(), progress: 0, overall: 0};
  const look = () => {
    for (const n of document.querySelectorAll('.node.executing')) window.__seen.executing.add(n.dataset.type);
    for (const bar of document.querySelectorAll('.node-progress')) {
      window.__seen.progress = Math.max(window.__seen.progress, parseFloat(bar.style.width) || 0);
    }
    const overall = document.getElementById('overall-progress');
    window.__seen.overall = Math.max(window.__seen.overall, parseFloat(overall.style.width) || 0);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, attributes: true,
                                                      attributeFilter: ['class', 'style']});
}"""


def add_node_by_search(page, node_type, query, point):
    before = page.locator(f'.node[data-type="{node_type}"]').count()
    page.mouse.dblclick(*point)
    search = page.locator("#node-search input")
    search.wait_for(state="visible")
    search.fill(query)
    result = page.locator(f'.search-result[data-type="{node_type}"]').first
    result.wait_for(state="visible")
    result.click()
    nodes = page.locator(f'.node[data-type="{node_type}"]')
    nodes.nth(before).wait_for(state="visible")
    return nodes.nth(before).get_attribute("data-id")


def test_build_queue_and_see_the_image(page):
    assert page.locator("#graph-canvas .node").count() == 0, "a fresh browser starts on an empty canvas"
    page.shot("empty-canvas")

    ids = [add_node_by_search(page, node_type, query, point) for node_type, query, point in NODES]
    assert len(set(ids)) == len(NODES)
    for (node_type, _, point), node_id in zip(NODES, ids):
        box = node_locator(page, node_id).bounding_box()
        assert abs(box["x"] - point[0]) < 40 and abs(box["y"] - point[1]) < 40, f"{node_type} lands where clicked"
    page.shot("nodes-added")

    for src, slot, dst, name in WIRES:
        source = node_locator(page, ids[src]).locator(f'.slot.output[data-index="{slot}"] .dot')
        target = node_locator(page, ids[dst]).locator(f'.slot.input[data-name="{name}"] .dot')
        drag(page, source, target)
    assert page.locator("path.link").count() == len(WIRES)
    links = page.evaluate("window.tessera.serializeWorkflow().links")
    assert sorted((str(l[1]), l[2], str(l[3])) for l in links) == sorted(
        (ids[src], slot, ids[dst]) for src, slot, dst, _ in WIRES)
    page.shot("wired")

    set_widget(page, ids[0], "ckpt_name", CHECKPOINT)
    set_widget(page, ids[1], "text", "a lighthouse at dusk")
    set_widget(page, ids[2], "text", "blurry")
    set_widget(page, ids[3], "width", 64)
    set_widget(page, ids[3], "height", 64)
    set_widget(page, ids[4], "steps", 3)
    set_widget(page, ids[4], "seed", 1234)
    set_widget(page, ids[6], "filename_prefix", "webtest")
    prompt = page.evaluate("window.tessera.toApiPrompt().prompt")
    assert prompt[ids[4]]["inputs"]["steps"] == 3 and prompt[ids[3]]["inputs"]["width"] == 64
    assert prompt[ids[4]]["inputs"]["model"] == [ids[0], 0]
    page.shot("widgets-set")

    page.evaluate(WATCH_RUN)
    page.click("#queue-button")
    page.locator(f'.node[data-id="{ids[6]}"] .node-images img').wait_for(state="visible", timeout=120000)
    page.locator("#gallery img").first.wait_for(state="visible", timeout=10000)
    page.wait_for_function("document.getElementById('overall-progress').style.width === '100%'", timeout=10000)
    page.locator(".history-item").first.wait_for(timeout=10000)
    page.shot("finished")

    seen = page.evaluate("({executing: [...window.__seen.executing], progress: window.__seen.progress,"
                         " overall: window.__seen.overall})")
    assert "KSampler" in seen["executing"], seen
    assert seen["progress"] > 0, "the sampler's progress bar moved"
    assert seen["overall"] == 100
    assert page.locator(".node.executing").count() == 0, "nothing is highlighted once the job is done"

    src = page.locator(f'.node[data-id="{ids[6]}"] .node-images img').first.get_attribute("src")
    assert "/view?" in src and "webtest" in src
    assert page.locator("#gallery img").first.get_attribute("src") == src
    size = page.evaluate("""async (src) => {
      const img = new Image(); img.src = src; await img.decode(); return [img.naturalWidth, img.naturalHeight];
    }""", src)
    assert size == [64, 64]

    # the PNG on disk carries the prompt and the editor's workflow (extra_data.extra_pnginfo)
    query = urllib.parse.urlsplit(src).query
    status, data, _ = page.server.request("GET", "/view?" + query)
    assert status == 200
    picture = Image.open(io.BytesIO(data))
    embedded = json.loads(picture.text["workflow"])
    assert sorted(str(n["id"]) for n in embedded["nodes"]) == sorted(ids)
    assert json.loads(picture.text["prompt"])[ids[4]]["inputs"]["steps"] == 3
    assert not serious_problems(page), page.problems


def test_batch_count_queues_several_jobs_and_history_can_delete(page):
    status, workflow = page.server.json("GET", "/workflow_examples/txt2img")
    assert status == 200
    page.evaluate("wf => window.tessera.loadWorkflow(wf)", workflow)
    ids = {n["type"]: str(n["id"]) for n in workflow["nodes"]}
    set_widget(page, ids["EmptyLatentImage"], "width", 64)
    set_widget(page, ids["EmptyLatentImage"], "height", 64)
    set_widget(page, ids["KSampler"], "steps", 1)
    set_widget(page, ids["CheckpointLoaderSimple"], "ckpt_name", CHECKPOINT)
    sampler = node_locator(page, ids["KSampler"])
    sampler.locator('.widget[data-name="control_after_generate"] select').select_option("increment")
    seed_before = int(sampler.locator('.widget[data-name="seed"] input').input_value())
    _, history_before = page.server.json("GET", "/history")

    page.fill("#batch-count", "2")
    page.click("#queue-button")
    page.wait_for_function(f"document.querySelectorAll('.history-item').length >= {len(history_before) + 2}",
                           timeout=120000)
    page.shot("two-jobs-done")
    # control_after_generate ran after each queued job
    assert int(sampler.locator('.widget[data-name="seed"] input').input_value()) == seed_before + 2
    _, history = page.server.json("GET", "/history")
    new = [h for pid, h in history.items() if pid not in history_before]
    assert sorted(h["prompt"][2][ids["KSampler"]]["inputs"]["seed"] for h in new) == [seed_before, seed_before + 1]

    newest = page.locator(".history-item").first
    doomed = newest.get_attribute("data-prompt-id")
    newest.locator("button.delete").click()
    page.wait_for_function(f"!document.querySelector('.history-item[data-prompt-id=\"{doomed}\"]')")
    _, history = page.server.json("GET", "/history")
    assert doomed not in history
    page.shot("history-deleted")
