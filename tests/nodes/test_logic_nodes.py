"""ComfySwitchNode through the scheduler: the selected branch is passed, the other is never computed."""
import pytest


def failing_branch():
    # validates, but raises when it runs: an 8x8 image cannot be scaled to 0.01 MP in steps of 256
    return {
        "small": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "boom": {"class_type": "ImageScaleToTotalPixels", "inputs": {"image": ["small", 0], "upscale_method": "area",
                                                                   "megapixels": 0.01, "resolution_steps": 256}},
    }


def switch_prompt(switch, connect=("on_false", "on_true")):
    prompt = failing_branch()
    prompt["good"] = {"class_type": "EmptyImage", "inputs": {"width": 12, "height": 10, "batch_size": 1, "color": 0}}
    inputs = {"switch": switch}
    if "on_true" in connect:
        inputs["on_true"] = ["good", 0]
    if "on_false" in connect:
        inputs["on_false"] = ["boom", 0]
    prompt["switch"] = {"class_type": "ComfySwitchNode", "inputs": inputs}
    prompt["size"] = {"class_type": "GetImageSize", "inputs": {"image": ["switch", 0]}}
    prompt["show"] = {"class_type": "PreviewAny", "inputs": {"source": ["size", 0]}}
    return prompt


def shown(sink):
    return {e["node"]: e["output"]["text"][0] for e in sink.of("executed")}


def test_on_passes_on_true_and_the_off_branch_never_runs(engine):
    outcome, sink = engine.run(switch_prompt(True))
    assert outcome.status == "success", sink.of("execution_error")
    assert shown(sink)["show"] == "12"
    assert "boom" not in {e["node"] for e in sink.of("executing") if e.get("node")}


def test_off_passes_on_false_and_its_error_surfaces(engine):
    outcome, sink = engine.run(switch_prompt(False))
    assert outcome.status == "error"
    errors = sink.of("execution_error")
    assert errors and errors[0]["node_id"] == "boom" and "resolution_steps" in errors[0]["exception_message"]


def test_with_one_input_unconnected_the_other_is_passed_whatever_the_switch(engine):
    outcome, sink = engine.run(switch_prompt(False, connect=("on_true",)))
    assert outcome.status == "success", sink.of("execution_error")
    assert shown(sink)["show"] == "12"


def test_nothing_connected_is_a_clear_error(engine):
    prompt = {"switch": {"class_type": "ComfySwitchNode", "inputs": {"switch": True}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["switch", 0]}}}
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    assert "connect on_false or on_true" in sink.of("execution_error")[0]["exception_message"]
