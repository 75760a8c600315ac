"""Opening workflows: a UI-format file through the Load button's file input and by dropping it on the canvas, and a
PNG that SaveImage wrote with the workflow embedded."""
import json
import os

from tests.server_harness import ROOT
from tests.web.conftest import CHECKPOINT

WORKFLOWS = os.path.join(ROOT, "workflows")

DROP_FILE = """async ([name, text, mime]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: mime}));
  const canvas = document.getElementById('graph-canvas');
  const box = canvas.getBoundingClientRect();
  const at = {bubbles: true, cancelable: true, dataTransfer: transfer,
              clientX: box.left + 200, clientY: box.top + 200};
  canvas.dispatchEvent(new DragEvent('dragenter', at));
  canvas.dispatchEvent(new DragEvent('dragover', at));
  canvas.dispatchEvent(new DragEvent('drop', at));
}"""


def graph_summary(page):
    return page.evaluate("""() => {
      const wf = window.tessera.serializeWorkflow();
      return {types: wf.nodes.map(n => [String(n.id), n.type]).sort(),
              links: wf.links.map(l => [String(l[1]), l[2], String(l[3]), l[4]]).sort()};
    }""")


def file_summary(workflow):
    return {"types": sorted([str(n["id"]), n["type"]] for n in workflow["nodes"]),
            "links": sorted([str(l[1]), l[2], str(l[3]), l[4]] for l in workflow["links"])}


def read(name):
    with open(os.path.join(WORKFLOWS, name)) as f:
        return json.load(f)


def test_load_button_opens_a_ui_workflow_file(page):
    path = os.path.join(WORKFLOWS, "sdxl_base_refiner.json")
    page.set_input_files("#load-file", path)
    workflow = read("sdxl_base_refiner.json")
    page.wait_for_function(f"document.querySelectorAll('#graph-canvas .node').length === {len(workflow['nodes'])}")
    assert graph_summary(page) == file_summary(workflow)
    assert page.locator("path.link").count() == len(workflow["links"])
    page.shot("loaded-by-button")


def test_dropping_a_json_file_on_the_canvas_loads_it(page):
    workflow = read("img2img.json")
    page.evaluate(DROP_FILE, ["img2img.json", json.dumps(workflow), "application/json"])
    page.wait_for_function(f"document.querySelectorAll('#graph-canvas .node').length === {len(workflow['nodes'])}")
    assert graph_summary(page) == file_summary(workflow)
    # widget values came along: the sampler's denoise is the file's
    sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
    denoise = page.locator(f'.node[data-id="{sampler["id"]}"] .widget[data-name="denoise"] input').input_value()
    assert float(denoise) == sampler["widgets_values"][-1]
    page.shot("loaded-by-drop")


def test_png_written_by_save_image_reopens_its_workflow(page, tmp_path):
    """Queue txt2img over HTTP with a recognisable UI workflow in extra_pnginfo; SaveImage embeds it in the PNG;
    opening that PNG in the editor restores exactly that graph."""
    server = page.server
    workflow = read("txt2img.json")
    for node in workflow["nodes"]:
        if node["type"] == "KSampler":
            node["title"] = "Sampler from the PNG"
    prompt = read("txt2img.api.json")
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"]["steps"] = 1
    prompt["4"]["inputs"]["ckpt_name"] = CHECKPOINT
    prompt["9"]["inputs"]["filename_prefix"] = "pngload"
    status, body = server.post_prompt(prompt, extra_data={"extra_pnginfo": {"workflow": workflow}})
    assert status == 200, body
    entry = server.wait_history(body["prompt_id"], timeout=120)
    image = entry["outputs"]["9"]["images"][0]
    status, png, _ = server.request("GET", f"/view?filename={image['filename']}&type=output")
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "from_save_image.png"
    path.write_bytes(png)

    page.set_input_files("#load-file", str(path))
    page.wait_for_selector('.node-title:has-text("Sampler from the PNG")')
    assert graph_summary(page) == file_summary(workflow)
    page.shot("loaded-from-png")

    # the same PNG dropped on the canvas works too
    page.evaluate("window.tessera.newWorkflow()")
    page.wait_for_function("document.querySelectorAll('#graph-canvas .node').length === 0")
    page.evaluate("""async (bytes) => {
      const transfer = new DataTransfer();
      transfer.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
      const canvas = document.getElementById('graph-canvas');
      const at = {bubbles: true, cancelable: true, dataTransfer: transfer, clientX: 300, clientY: 300};
      canvas.dispatchEvent(new DragEvent('dragover', at));
      canvas.dispatchEvent(new DragEvent('drop', at));
    }""", list(png))
    page.wait_for_selector('.node-title:has-text("Sampler from the PNG")')
    assert graph_summary(page) == file_summary(workflow)
