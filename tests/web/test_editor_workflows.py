"""The own editor's everyday comforts, in Chromium: a first visit opens the txt2img example at a readable zoom;
workflows are saved on the server (Ctrl+S), listed, reopened, renamed and deleted through /api/userdata (where the
official frontend finds them too); opening something over unsaved changes asks first; results open in a lightbox
and small ones fill their node; widget labels are not cut."""
import json
import os

import pytest

from tests.web.helpers import node_locator, serious_problems, set_widget

pytestmark = pytest.mark.timeout(240)


@pytest.mark.first_visit
def test_a_first_visit_opens_the_txt2img_example(page):
    types = page.evaluate("() => [...window.tessera.graph.nodes.values()].map(n => n.type).sort()")
    assert "KSampler" in types and "CheckpointLoaderSimple" in types and "SaveImage" in types
    assert page.evaluate("() => window.tessera.hasUnsavedChanges()") is False
    assert page.evaluate("() => window.tessera.view.scale") >= 0.6
    # every widget label of the sampler is shown whole (the value beside it gives way)
    cut = page.evaluate("""() => [...document.querySelectorAll('#graph-canvas .node .widget-label')]
        .filter(l => l.offsetParent && l.scrollWidth > l.clientWidth + 1).map(l => l.textContent)""")
    assert cut == []
    page.shot("first-visit")


def test_workflows_saved_on_the_server(page):
    page.evaluate("() => window.tessera.loadExample('txt2img')")
    page.once("dialog", lambda d: d.accept("my flow"))
    page.keyboard.press("Control+s")
    path = os.path.join(page.server.base_dir, "user", "default", "workflows", "my flow.json")
    page.wait_for_function("() => window.tessera.savedPath === 'workflows/my flow.json'", timeout=10000)
    with open(path, encoding="utf-8") as f:
        assert any(n["type"] == "KSampler" for n in json.load(f)["nodes"])
    # shared with the official frontend: the same listing it asks for
    status, listing = page.server.json("GET", "/api/userdata?dir=workflows&recurse=true&full_info=true")
    assert "my flow.json" in [f["path"] for f in listing]
    page.evaluate("() => window.tessera.newWorkflow()")
    page.click("#workflows-button")
    page.locator('.menu-item[data-type="saved-workflow"]', has_text="my flow").click()
    page.wait_for_function("() => window.tessera.graph.nodes.size === 7 && window.tessera.workflowName === 'my flow'")
    page.shot("reopened")
    page.once("dialog", lambda d: d.accept("renamed flow"))
    page.click("#workflows-button")
    page.locator(".menu-item", has_text="Rename current").click()
    page.wait_for_function("() => window.tessera.savedPath === 'workflows/renamed flow.json'", timeout=10000)
    assert not os.path.exists(path) and os.path.isfile(path.replace("my flow", "renamed flow"))
    page.once("dialog", lambda d: d.accept())
    page.click("#workflows-button")
    page.locator(".menu-item", has_text="Delete current").click()
    page.wait_for_function("() => window.tessera.savedPath === null", timeout=10000)
    assert not os.path.exists(path.replace("my flow", "renamed flow"))


def test_opening_over_unsaved_changes_asks_first(page):
    page.evaluate("() => window.tessera.loadExample('txt2img')")
    ks = page.evaluate("() => [...window.tessera.graph.nodes.values()].find(n => n.type === 'KSampler').id")
    set_widget(page, ks, "steps", 5)  # an edit
    assert page.evaluate("() => window.tessera.hasUnsavedChanges()") is True
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("#examples-button")
    page.locator(".menu-item", has_text="img2img").first.click()
    page.wait_for_timeout(500)
    assert asked and "not saved" in asked[0]
    assert page.evaluate("(id) => window.tessera.graph.nodes.get(id).widgets.find(w => w.name === 'steps').value",
                         ks) == 5  # kept
    page.once("dialog", lambda d: d.accept())
    page.click("#examples-button")
    page.locator(".menu-item", has_text="img2img").first.click()
    page.wait_for_function("() => window.tessera.workflowName === 'img2img'", timeout=10000)


def test_a_large_workflow_opens_readable(page):
    nodes = [{"id": i + 1, "type": "PrimitiveInt", "pos": [(i % 10) * 400, (i // 10) * 300], "size": [300, 80],
              "flags": {}, "order": i, "mode": 0, "inputs": [], "outputs": [], "properties": {},
              "widgets_values": [i, "fixed"]} for i in range(80)]
    page.evaluate("(wf) => window.tessera.loadWorkflow(wf, 'big')",
                  {"last_node_id": 80, "last_link_id": 0, "nodes": nodes, "links": [], "groups": [], "config": {},
                   "extra": {}, "version": 0.4})
    assert page.evaluate("() => window.tessera.view.scale") == 0.6  # not the 0.3 that fitting all would give
    assert node_locator(page, 1).is_visible()  # the top-left of the graph is in view
    page.evaluate("() => window.tessera.view.fitView()")
    assert page.evaluate("() => window.tessera.view.scale") < 0.6  # "fit view" still shows everything


def test_results_open_in_a_lightbox_and_small_ones_fill_their_node(page):
    page.evaluate("() => window.tessera.loadExample('txt2img')")
    by_type = page.evaluate("() => Object.fromEntries([...window.tessera.graph.nodes.values()].map(n => [n.type, n.id]))")
    set_widget(page, by_type["EmptyLatentImage"], "width", 64)
    set_widget(page, by_type["EmptyLatentImage"], "height", 64)
    set_widget(page, by_type["KSampler"], "steps", 2)
    page.click("#queue-button")
    result = node_locator(page, by_type["SaveImage"]).locator(".node-images img")
    result.wait_for(state="visible", timeout=120000)
    page.wait_for_function("(id) => document.querySelector(`#graph-canvas .node[data-id='${id}'] .node-images img.small`)",
                           arg=by_type["SaveImage"], timeout=10000)
    node_width = node_locator(page, by_type["SaveImage"]).bounding_box()["width"]
    assert result.bounding_box()["width"] > node_width * 0.7  # 64 px, shown across the node
    page.locator("#gallery img").first.click()
    lightbox = page.locator("#lightbox")
    lightbox.wait_for(state="visible", timeout=5000)
    assert "/view?" in page.locator("#lightbox img").get_attribute("src")
    assert page.locator("#lightbox img").bounding_box()["width"] >= 256
    page.shot("lightbox")
    assert len(page.context.pages) == 1  # no new tab
    page.keyboard.press("Escape")
    lightbox.wait_for(state="hidden", timeout=5000)
    assert not serious_problems(page), page.problems


def test_number_widgets_change_by_dragging_their_label(page):
    page.evaluate("() => window.tessera.loadExample('txt2img')")
    ks = page.evaluate("() => [...window.tessera.graph.nodes.values()].find(n => n.type === 'KSampler').id")
    set_widget(page, ks, "steps", 20)
    label = node_locator(page, ks).locator('.widget[data-name="steps"] .widget-label')
    box = label.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 61, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    steps = "(id) => window.tessera.graph.nodes.get(id).widgets.find(w => w.name === 'steps').value"
    assert page.evaluate(steps, ks) == 30  # one step per 6 px
    assert page.evaluate("() => window.tessera.hasUnsavedChanges()") is True
