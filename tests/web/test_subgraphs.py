"""Workflows with subgraphs (UI format 1.0 `definitions.subgraphs`) in the editor: an instance is drawn with the
definition's sockets and name, saving keeps it, `toApiPrompt()` flattens it exactly as graph/ui_format.py does (ids
"<instance>:<inner>"), run status of inner nodes shows on the instance, and a txt2img whose text encoders and
sampler live in a subgraph runs to a picture against the tiny checkpoint."""
import copy
import json
from pathlib import Path

import pytest

from graph.ui_format import ui_to_api
from nodes import builtin_catalogue
from tests.web.conftest import CHECKPOINT
from tests.web.helpers import node_locator, serious_problems

FIXTURES = Path(__file__).resolve().parents[1] / "graph" / "fixtures"
SAMPLE_ID = "5b0c7e2a-3d41-4c6f-9a8e-1f2b3c4d5e6f"
INSTANCE = 10


def n(node_id, node_type, inputs=(), outputs=(), widgets=None, mode=0, **extra):
    entry = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [240, 100], "flags": {}, "order": 0,
             "mode": mode, "inputs": list(inputs), "outputs": list(outputs), "properties": {}, **extra}
    if widgets is not None:
        entry["widgets_values"] = widgets
    return entry


def i(name, kind, link=None, widget=False):
    slot = {"name": name, "type": kind, "link": link}
    if widget:
        slot["widget"] = {"name": name}
    return slot


def o(kind, links=(), name=None):
    return {"name": name or kind, "type": kind, "links": list(links)}


def link(link_id, origin, origin_slot, target, target_slot, kind):
    return {"id": link_id, "origin_id": origin, "origin_slot": origin_slot, "target_id": target,
            "target_slot": target_slot, "type": kind}


def subgraph_txt2img(steps=2):
    """txt2img (1.0 file) with both CLIPTextEncodes and the KSampler inside subgraph instance 10; the subgraph
    also holds a muted text encoder that must not run."""
    definition = {
        "id": SAMPLE_ID, "version": 1, "name": "Prompt and sample", "revision": 0, "config": {},
        "state": {"lastGroupId": 0, "lastNodeId": 12, "lastLinkId": 7, "lastRerouteId": 0},
        "inputNode": {"id": -10, "bounding": [-300, 0, 120, 100]},
        "outputNode": {"id": -20, "bounding": [900, 0, 120, 60]},
        "inputs": [{"id": "in-model", "name": "model", "type": "MODEL", "linkIds": [1]},
                   {"id": "in-clip", "name": "clip", "type": "CLIP", "linkIds": [2, 3]},
                   {"id": "in-latent", "name": "latent", "type": "LATENT", "linkIds": [6]}],
        "outputs": [{"id": "out-latent", "name": "sampled", "type": "LATENT", "linkIds": [7]}],
        "widgets": [],
        "nodes": [
            n(6, "CLIPTextEncode", [i("clip", "CLIP", 2)], [o("CONDITIONING", [4])], ["a lighthouse at dusk"]),
            n(7, "CLIPTextEncode", [i("clip", "CLIP", 3)], [o("CONDITIONING", [5])], ["blurry"]),
            n(3, "KSampler", [i("model", "MODEL", 1), i("positive", "CONDITIONING", 4),
                              i("negative", "CONDITIONING", 5), i("latent_image", "LATENT", 6)],
              [o("LATENT", [7])], [77, "fixed", steps, 7.0, "euler", "normal", 1.0]),
            n(12, "CLIPTextEncode", [i("clip", "CLIP", None)], [o("CONDITIONING")], ["never runs"], mode=2),
        ],
        "links": [link(1, -10, 0, 3, 0, "MODEL"), link(2, -10, 1, 6, 0, "CLIP"), link(3, -10, 1, 7, 0, "CLIP"),
                  link(4, 6, 0, 3, 1, "CONDITIONING"), link(5, 7, 0, 3, 2, "CONDITIONING"),
                  link(6, -10, 2, 3, 3, "LATENT"), link(7, 3, 0, -20, 0, "LATENT")],
    }
    nodes = [
        n(4, "CheckpointLoaderSimple", [], [o("MODEL", [1]), o("CLIP", [2]), o("VAE", [8])], [CHECKPOINT],
          pos=[20, 40]),
        n(5, "EmptyLatentImage", [], [o("LATENT", [3])], [64, 64, 1], pos=[20, 300]),
        # inputs deliberately in another order than the definition's: they are matched by name
        n(INSTANCE, SAMPLE_ID, [i("clip", "CLIP", 2), i("model", "MODEL", 1), i("latent", "LATENT", 3)],
          [o("LATENT", [4], name="sampled")], ["kept as saved", 5], pos=[400, 40], size=[260, 120]),
        n(8, "VAEDecode", [i("samples", "LATENT", 4), i("vae", "VAE", 8)], [o("IMAGE", [9])], [], pos=[720, 40]),
        n(9, "SaveImage", [i("images", "IMAGE", 9)], [], ["subgraphtest"], pos=[1000, 40]),
    ]
    links = [link(1, 4, 0, INSTANCE, 1, "MODEL"), link(2, 4, 1, INSTANCE, 0, "CLIP"),
             link(3, 5, 0, INSTANCE, 2, "LATENT"), link(4, INSTANCE, 0, 8, 0, "LATENT"),
             link(8, 4, 2, 8, 1, "VAE"), link(9, 8, 0, 9, 0, "IMAGE")]
    return {"id": "0b1e8f52-7c9d-4e3a-8b6f-2a1d0c9e8f7a", "revision": 0, "version": 1,
            "state": {"lastGroupId": 0, "lastNodeId": 12, "lastLinkId": 9, "lastRerouteId": 0},
            "nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {},
            "definitions": {"subgraphs": [definition]}}


def nested_int_math():
    """Two levels of subgraphs (lists for links inside, objects outside), an unconnected subgraph input that leaves
    the inner widget value, a muted instance and a bypassed node inside a subgraph."""
    inner_id, outer_id = "11111111-aaaa-4aaa-8aaa-000000000001", "22222222-bbbb-4bbb-8bbb-000000000002"
    inner = {
        "id": inner_id, "name": "Add", "inputs": [{"name": "x", "type": "INT"}, {"name": "y", "type": "INT"}],
        "outputs": [{"name": "sum", "type": "INT"}],
        "nodes": [n(1, "IntMath", [i("a", "INT", 1, widget=True), i("b", "INT", 2, widget=True)], [o("INT", [3])],
                    [0, 100, "add"]),
                  n(2, "IntMath", [i("a", "INT", 3, widget=True)], [o("INT", [4])], [0, 2, "multiply"], mode=4)],
        "links": [link(1, -10, 0, 1, 0, "INT"), link(2, -10, 1, 1, 1, "INT"), link(3, 1, 0, 2, 0, "INT"),
                  link(4, 2, 0, -20, 0, "INT")],
    }
    outer = {
        "id": outer_id, "name": "Wrap", "inputs": [{"name": "v", "type": "INT"}],
        "outputs": [{"name": "out", "type": "INT"}],
        "nodes": [n(3, inner_id, [i("x", "INT", 1), i("y", "INT")], [o("INT", [2])])],
        "links": [[1, -10, 0, 3, 0, "INT"], [2, 3, 0, -20, 0, "INT"]],
    }
    return {
        "version": 1, "definitions": {"subgraphs": [outer, inner]}, "extra": {}, "groups": [], "config": {},
        "nodes": [n(1, "PrimitiveInt", [], [o("INT", [1])], [5, "fixed"]),
                  n(7, outer_id, [i("v", "INT", 1)], [o("INT", [2], name="out")]),
                  n(8, "PreviewAny", [i("source", "*", 2)]),
                  n(9, outer_id, [i("v", "INT", None)], [o("INT", name="out")], mode=2)],
        "links": [link(1, 1, 0, 7, 0, "INT"), link(2, 7, 0, 8, 0, "INT")],
    }


def fixture(name, bypass_instance=False):
    workflow = json.loads((FIXTURES / name).read_text())
    if bypass_instance:
        next(node for node in workflow["nodes"] if node["id"] == 7)["mode"] = 4
    return workflow


@pytest.fixture(scope="module")
def catalogue():
    return builtin_catalogue()


def browser_prompt(page, workflow):
    """Load `workflow` in the editor and export it; `_meta` (titles, ignored by the server) is left out."""
    prompt = page.evaluate("wf => { window.tessera.loadWorkflow(wf); return window.tessera.toApiPrompt().prompt; }",
                           workflow)
    for entry in prompt.values():
        entry.pop("_meta", None)
    return prompt


@pytest.mark.parametrize("name", ["subgraph_txt2img", "nested", "fixture", "fixture_bypassed"])
def test_export_matches_the_server_conversion(page, catalogue, name):
    workflow = {"subgraph_txt2img": subgraph_txt2img, "nested": nested_int_math,
                "fixture": lambda: fixture("ui_v10_subgraph.json"),
                "fixture_bypassed": lambda: fixture("ui_v10_subgraph.json", bypass_instance=True)}[name]()
    expected = ui_to_api(copy.deepcopy(workflow), catalogue)
    assert browser_prompt(page, workflow) == expected
    # and what the editor saves converts to that same prompt on the server
    saved = page.evaluate("window.tessera.serializeWorkflow()")
    assert ui_to_api(saved, catalogue) == expected
    assert not serious_problems(page), page.problems


def test_flattened_ids_and_links(page):
    prompt = browser_prompt(page, subgraph_txt2img())
    assert sorted(prompt) == sorted(["4", "5", "8", "9", "10:3", "10:6", "10:7"]), "muted 10:12 is left out"
    sampler = prompt["10:3"]["inputs"]
    assert sampler["model"] == ["4", 0] and sampler["latent_image"] == ["5", 0]
    assert sampler["positive"] == ["10:6", 0] and sampler["negative"] == ["10:7", 0]
    assert sampler["seed"] == 77 and sampler["steps"] == 2
    assert prompt["10:6"]["inputs"] == {"text": "a lighthouse at dusk", "clip": ["4", 1]}
    assert prompt["8"]["inputs"]["samples"] == ["10:3", 0]

    nested = browser_prompt(page, nested_int_math())
    # y unconnected on the inner instance: its widget value 100 stays; the bypassed multiply passes the sum on
    assert nested["7:3:1"]["inputs"] == {"a": ["1", 0], "b": 100, "operation": "add"}
    assert nested["8"]["inputs"]["source"] == ["7:3:1", 0]
    assert not any(key.startswith("9:") for key in nested), "the muted instance's nodes do not run"


def test_instance_is_drawn_from_its_definition_and_saved_back(page):
    workflow = subgraph_txt2img()
    page.evaluate("wf => window.tessera.loadWorkflow(wf)", workflow)
    instance = node_locator(page, INSTANCE)
    instance.wait_for(state="visible")
    assert "missing" not in instance.get_attribute("class")
    assert instance.locator(".node-title").inner_text().strip() == "Prompt and sample"
    inputs = instance.locator(".slot.input")
    assert [(inputs.nth(k).get_attribute("data-name"), inputs.nth(k).get_attribute("data-type"))
            for k in range(inputs.count())] == [("model", "MODEL"), ("clip", "CLIP"), ("latent", "LATENT")]
    outputs = instance.locator(".slot.output")
    assert outputs.count() == 1 and outputs.first.get_attribute("data-type") == "LATENT"
    assert "sampled" in outputs.first.inner_text()
    assert page.locator("path.link").count() == len(workflow["links"])
    assert page.locator(".toast", has_text="not installed").count() == 0
    page.shot("subgraph-instance")

    saved = page.evaluate("window.tessera.serializeWorkflow()")
    assert saved["definitions"] == workflow["definitions"]
    node = next(x for x in saved["nodes"] if x["id"] == INSTANCE)
    assert node["type"] == SAMPLE_ID and node["widgets_values"] == ["kept as saved", 5]
    assert node["pos"] == [400, 40] and "title" not in node, "the title is the subgraph's name, not saved"
    by_name = {slot["name"]: slot["link"] for slot in node["inputs"]}
    assert by_name == {"model": 1, "clip": 2, "latent": 3}
    # a saved file reopens to the same drawing (the undo/autosave path goes through this too)
    page.evaluate("wf => window.tessera.loadWorkflow(wf)", saved)
    again = page.evaluate("window.tessera.serializeWorkflow()")
    for entry in (saved, again):
        entry["extra"].pop("ds", None)
    assert again == saved


def test_inner_node_status_shows_on_the_instance(page):
    page.evaluate("wf => window.tessera.loadWorkflow(wf)", subgraph_txt2img())
    instance = node_locator(page, INSTANCE)
    page.evaluate("window.tessera.setNodeStatus('10:3', {executing: true, progress: 0.5})")
    assert "executing" in instance.get_attribute("class")
    assert instance.locator(".node-progress").evaluate("e => parseFloat(e.style.width)") == 50
    page.evaluate("window.tessera.setNodeStatus('10:3', {executing: false, progress: null})")
    page.evaluate("window.tessera.setNodeStatus('10:6', {error: {message: 'text too long',"
                  " inputs: {text: 'too long'}}})")
    assert "has-error" in instance.get_attribute("class")
    assert "text too long" in instance.locator(".node-error").inner_text()
    assert "10:6" in instance.locator(".node-error").inner_text()
    assert page.locator(".node.has-error").count() == 1
    page.evaluate("window.tessera.setNodeStatus('99:1', {executing: true})")  # no such instance: ignored
    assert page.locator(".node.executing").count() == 0
    page.evaluate("window.tessera.clearNodeStatus()")
    assert page.locator(".node.has-error").count() == 0


WATCH = """() => {
  window.__executing = new Set();
  new MutationObserver(() => {
    for (const n of document.querySelectorAll('.node.executing')) window.__executing.add(n.dataset.id);
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['class']});
}"""


def test_subgraph_txt2img_runs_to_a_picture(page, catalogue):
    workflow = subgraph_txt2img(steps=2)
    prompt = browser_prompt(page, workflow)
    assert prompt == ui_to_api(copy.deepcopy(workflow), catalogue)
    _, history_before = page.server.json("GET", "/history")

    page.evaluate(WATCH)
    page.click("#queue-button")
    image = node_locator(page, 9).locator(".node-images img").first
    image.wait_for(state="visible", timeout=120000)
    page.wait_for_function("document.getElementById('overall-progress').style.width === '100%'", timeout=10000)
    page.shot("subgraph-txt2img-done")

    assert str(INSTANCE) in page.evaluate("[...window.__executing]"), "inner nodes ran highlighted on the instance"
    assert page.locator(".node.executing").count() == 0
    assert page.locator(".node.has-error").count() == 0
    src = image.get_attribute("src")
    assert "subgraphtest" in src
    size = page.evaluate("""async (src) => {
      const img = new Image(); img.src = src; await img.decode(); return [img.naturalWidth, img.naturalHeight];
    }""", src)
    assert size == [64, 64]
    # the server ran exactly the flattened prompt (the editor may add control values; none here: seed is fixed)
    _, history = page.server.json("GET", "/history")
    new = [entry for pid, entry in history.items() if pid not in history_before]
    assert len(new) == 1
    ran = new[0]["prompt"][2]
    for entry in ran.values():
        entry.pop("_meta", None)
    assert ran == prompt
    assert not serious_problems(page), page.problems
