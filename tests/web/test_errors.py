"""Errors land where the user can fix them: validation errors from POST /prompt on the offending node and input,
execution errors on the node that failed, and the message in #error-dialog."""
import json
import os

from tests.server_harness import ROOT
from tests.web.conftest import CHECKPOINT
from tests.web.helpers import node_locator, serious_problems, set_widget

WORKFLOWS = os.path.join(ROOT, "workflows")


def load_txt2img(page, tmp_path, edit=None):
    with open(os.path.join(WORKFLOWS, "txt2img.json")) as f:
        workflow = json.load(f)
    ids = {n["type"]: str(n["id"]) for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        if node["type"] == "EmptyLatentImage":
            node["widgets_values"][:2] = [64, 64]
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"][0] = CHECKPOINT
        if node["type"] == "KSampler":
            node["widgets_values"][2] = 1  # steps
    if edit:
        edit(workflow, ids)
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(workflow))
    page.set_input_files("#load-file", str(path))
    page.wait_for_function(f"document.querySelectorAll('#graph-canvas .node').length === {len(workflow['nodes'])}")
    return ids


def test_out_of_range_value_is_marked_on_its_widget(page, tmp_path):
    def too_many_steps(workflow, ids):
        sampler = next(n for n in workflow["nodes"] if n["type"] == "KSampler")
        sampler["widgets_values"][2] = 20000  # steps: the catalogue's max is 10000

    ids = load_txt2img(page, tmp_path, too_many_steps)
    sampler = node_locator(page, ids["KSampler"])
    page.click("#queue-button")
    sampler.locator(".node-error").filter(has_text="steps").wait_for(timeout=10000)
    assert "has-error" in sampler.get_attribute("class")
    assert "has-error" in sampler.locator('.widget[data-name="steps"]').get_attribute("class")
    assert "has-error" not in sampler.locator('.widget[data-name="cfg"]').get_attribute("class")
    assert page.locator(".node.has-error").count() == 1, "only the offending node is marked"
    dialog = page.locator("#error-dialog")
    assert dialog.is_visible() and "validation" in dialog.inner_text().lower()
    page.shot("steps-out-of-range")

    # fixing the value and queueing again clears the marks
    set_widget(page, ids["KSampler"], "steps", 1)
    page.click("#queue-button")
    page.wait_for_function("!document.querySelector('.node.has-error')", timeout=10000)
    assert not dialog.is_visible()
    page.shot("fixed")
    assert not serious_problems(page), page.problems


def test_missing_required_link_marks_the_input_slot(page, tmp_path):
    ids = load_txt2img(page, tmp_path)
    latent = node_locator(page, ids["EmptyLatentImage"])
    latent.locator(".node-title").click()
    page.keyboard.press("Delete")
    latent.wait_for(state="detached")
    sampler = node_locator(page, ids["KSampler"])
    page.click("#queue-button")
    sampler.locator('.slot.input[data-name="latent_image"].has-error').wait_for(timeout=10000)
    assert "latent_image" in sampler.locator(".node-error").inner_text()
    assert "has-error" in sampler.get_attribute("class")
    page.shot("missing-latent-link")


def test_execution_error_is_shown_on_the_failing_node(page, tmp_path):
    def broken_checkpoint(workflow, ids):
        loader = next(n for n in workflow["nodes"] if n["type"] == "CheckpointLoaderSimple")
        loader["widgets_values"][0] = "broken.safetensors"

    ids = load_txt2img(page, tmp_path, broken_checkpoint)
    page.click("#queue-button")
    loader = node_locator(page, ids["CheckpointLoaderSimple"])
    page.locator(f'.node.has-error[data-id="{ids["CheckpointLoaderSimple"]}"]').wait_for(timeout=60000)
    message = loader.locator(".node-error").inner_text()
    assert "ModelFileError" in message and "broken.safetensors" in message
    dialog = page.locator("#error-dialog")
    dialog.wait_for(state="visible")
    assert "Execution failed" in dialog.inner_text() and "CheckpointLoaderSimple" in dialog.inner_text()
    assert page.locator(".node.executing").count() == 0
    page.locator(".history-item.error").first.wait_for(timeout=10000)
    page.shot("execution-error")
