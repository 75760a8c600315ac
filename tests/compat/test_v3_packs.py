"""The V3 fixture pack (tests/fixtures/packs/v3_extension_pack), written against `comfy_api.latest.io` as current
packs are, runs through the real validator and scheduler: ComfyExtension registration, dynamic inputs expanded
per node, MatchType, hidden values, ui outputs, async execute, validate/fingerprint/lazy hooks, block_execution."""
import json
import os

from PIL import Image

import nodes as engine_nodes


def show(node_id, slot=0):
    return {"class_type": "PreviewAny", "inputs": {"source": [node_id, slot]}}


def test_extension_and_mapping_classes_register_with_their_schema(pack_engine):
    result = pack_engine.results["v3_extension_pack"]
    assert result.ok, result.error
    assert sorted(result.node_names) == ["V3Adjust", "V3AsyncPreview", "V3Gate", "V3LazyPick", "V3SolidImage",
                                         "V3Sum"]
    entry = pack_engine.catalogue.get("V3Adjust").to_catalogue(pack_engine.services)
    assert entry["display_name"] == "V3 Adjust (shown)" and entry["category"] == "tests/v3"
    assert entry["python_module"] == "custom_nodes.v3_extension_pack"
    mode = entry["input"]["required"]["mode"]
    assert mode[0] == "COMFY_DYNAMICCOMBO_V3"
    assert [o["key"] for o in mode[1]["options"]] == ["multiply", "offset"]
    assert mode[1]["options"][1]["inputs"]["required"]["amount"][1]["min"] == -1.0
    value = entry["input"]["required"]["value"]
    assert value[0] == "COMFY_MATCHTYPE_V3"
    assert value[1]["template"] == {"template_id": "image_or_mask", "allowed_types": "IMAGE,MASK"}
    assert entry["output"] == ["COMFY_MATCHTYPE_V3"] and entry["output_matchtypes"] == ["image_or_mask"]
    summed = pack_engine.catalogue.get("V3Sum").to_catalogue(pack_engine.services)
    assert summed["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert summed["input"]["required"]["numbers"][1]["template"]["prefix"] == "n"


def test_pack_sees_v3_classes_in_node_class_mappings(pack_engine):
    from comfy_api.latest import io
    mapped = engine_nodes.NODE_CLASS_MAPPINGS["V3Adjust"]
    assert issubclass(mapped, io.ComfyNode) and mapped.RETURN_TYPES == ("COMFY_MATCHTYPE_V3",)
    assert mapped.INPUT_TYPES()["required"]["mode"][0] == "COMFY_DYNAMICCOMBO_V3"


def test_prestartup_script_ran_before_the_pack_imported(pack_engine):
    import sys
    module = sys.modules[pack_engine.results["v3_extension_pack"].module_name]
    assert module.PRESTARTUP_SEEN == "ran"


def test_dynamic_combo_brings_the_chosen_options_inputs(pack_engine):
    prompt = {
        "img": {"class_type": "V3SolidImage", "inputs": {"size": 4, "level": 0.25}},
        "mul": {"class_type": "V3Adjust", "inputs": {"value": ["img", 0], "mode": "multiply", "mode.factor": 3.0}},
        "off": {"class_type": "V3Adjust", "inputs": {"value": ["img", 1], "mode": "offset", "mode.amount": 0.9,
                                                      "mode.clamp": True}},
        "s1": {"class_type": "SaveImage", "inputs": {"images": ["mul", 0], "filename_prefix": "v3mul"}},
        "m": {"class_type": "MaskToImage", "inputs": {"mask": ["off", 0]}},
        "s2": {"class_type": "SaveImage", "inputs": {"images": ["m", 0], "filename_prefix": "v3off"}},
    }
    outcome, _ = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    out_dir = pack_engine.services.paths.output_dir
    mul = Image.open(os.path.join(out_dir, outcome.outputs["s1"]["images"][0]["filename"]))
    off = Image.open(os.path.join(out_dir, outcome.outputs["s2"]["images"][0]["filename"]))
    assert mul.getpixel((0, 0)) == (191, 191, 191)  # 0.25 x 3 = 0.75
    assert off.getpixel((0, 0)) == (255, 255, 255)  # 0.25 + 0.9, clamped to 1


def test_dynamic_sub_inputs_are_validated_as_declared(pack_engine):
    base = {"img": {"class_type": "V3SolidImage", "inputs": {"size": 4, "level": 0.25}},
            "s": {"class_type": "SaveImage", "inputs": {"images": ["adj", 0]}}}
    too_big = dict(base, adj={"class_type": "V3Adjust", "inputs": {"value": ["img", 0], "mode": "multiply",
                                                                   "mode.factor": 11.0}})
    result = pack_engine.validate(too_big)
    assert not result.ok
    errors = result.node_errors["adj"]["errors"]
    assert errors[0]["type"] == "value_bigger_than_max" and errors[0]["extra_info"]["input_name"] == "mode.factor"
    missing = dict(base, adj={"class_type": "V3Adjust", "inputs": {"value": ["img", 0], "mode": "offset"}})
    names = {e["extra_info"]["input_name"] for e in pack_engine.validate(missing).node_errors["adj"]["errors"]}
    assert names == {"mode.amount", "mode.clamp"}
    unknown = dict(base, adj={"class_type": "V3Adjust", "inputs": {"value": ["img", 0], "mode": "divide"}})
    err = pack_engine.validate(unknown).node_errors["adj"]["errors"][0]
    assert err["type"] == "value_not_in_list"


def test_autogrow_gathers_the_linked_inputs_into_one_dict(pack_engine):
    prompt = {
        "a": {"class_type": "PrimitiveInt", "inputs": {"value": 4}},
        "sum": {"class_type": "V3Sum", "inputs": {"numbers.n0": ["a", 0], "numbers.n1": 5, "numbers.n3": 7}},
        "show": show("sum"),
    }
    outcome, sink = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["show"]["text"] == ["16"]
    assert list(outcome.outputs["sum"]["text"]) == ["sum:['n0', 'n1', 'n3']=16"]  # cls.hidden.unique_id is the node id
    too_few = {"sum": {"class_type": "V3Sum", "inputs": {"numbers.n0": 1}}, "show": show("sum")}
    errors = pack_engine.validate(too_few).node_errors["sum"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("required_input_missing",
                                                                             "numbers.n1")]


def test_validate_inputs_and_fingerprint_inputs(pack_engine):
    import sys
    module = sys.modules[pack_engine.results["v3_extension_pack"].module_name]
    odd = {"img": {"class_type": "V3SolidImage", "inputs": {"size": 5, "level": 0.5}},
           "s": {"class_type": "SaveImage", "inputs": {"images": ["img", 0]}}}
    err = pack_engine.validate(odd).node_errors["img"]["errors"][0]
    assert err["type"] == "custom_validation_failed" and "size must be even, got 5" in err["details"]
    good = {"img": {"class_type": "V3SolidImage", "inputs": {"size": 6, "level": 0.5}},
            "s": {"class_type": "PreviewImage", "inputs": {"images": ["img", 0]}}}
    module.FINGERPRINTS.clear()
    first, _ = pack_engine.run(good)
    second, _ = pack_engine.run(good)
    assert first.status == second.status == "success"
    assert module.FINGERPRINTS == [(6, 0.5), (6, 0.5)]
    assert "img" in first.executed and "img" not in second.executed  # same fingerprint: cached


def test_async_ui_preview_writes_temp_files_with_the_workflow(pack_engine):
    prompt = {"img": {"class_type": "V3SolidImage", "inputs": {"size": 4, "level": 1.0}},
              "p": {"class_type": "V3AsyncPreview", "inputs": {"images": ["img", 0]}}}
    outcome, sink = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    shown = outcome.outputs["p"]
    assert shown["animated"] == [False] or shown["animated"] == (False,)
    entry = shown["images"][0]
    assert entry["type"] == "temp" and entry["filename"].startswith("ComfyUI_temp_")
    written = Image.open(os.path.join(pack_engine.services.paths.temp_dir, entry["subfolder"], entry["filename"]))
    assert json.loads(written.info["prompt"])["p"]["class_type"] == "V3AsyncPreview"  # hidden PROMPT reached it


def test_lazy_inputs_and_block_execution(pack_engine):
    prompt = {
        "one": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
        "boom": {"class_type": "V3Gate", "inputs": {"value": ["one", 0], "block": True}},
        "pick": {"class_type": "V3LazyPick", "inputs": {"first": True, "a": ["one", 0], "b": ["boom", 0]}},
        "show": show("pick"),
        "blocked": show("boom"),
    }
    outcome, _ = pack_engine.run(prompt)
    assert outcome.outputs["show"]["text"] == ["1"]
    assert "boom" in outcome.executed  # it ran for the blocked output...
    assert "blocked" not in outcome.outputs  # ...whose consumer never ran (the blocker carries a message)


def test_ui_workflow_with_a_dynamic_combo_converts_by_the_chosen_option(pack_engine):
    """widgets_values hold the combo's key, then the chosen option's widgets."""
    from graph.ui_format import ui_to_api
    workflow = {"last_node_id": 3, "last_link_id": 2, "nodes": [
        {"id": 1, "type": "V3SolidImage", "mode": 0, "inputs": [], "outputs": [{"name": "IMAGE", "links": [1]}],
         "widgets_values": [4, 0.25]},
        {"id": 2, "type": "V3Adjust", "mode": 0, "inputs": [{"name": "value", "link": 1}],
         "outputs": [{"name": "adjusted", "links": [2]}], "widgets_values": ["offset", 0.5, False]},
        {"id": 3, "type": "PreviewImage", "mode": 0, "inputs": [{"name": "images", "link": 2}], "outputs": [],
         "widgets_values": []}],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]], "version": 0.4}
    prompt = ui_to_api(workflow, pack_engine.catalogue)
    assert prompt["2"]["inputs"] == {"value": ["1", 0], "mode": "offset", "mode.amount": 0.5, "mode.clamp": False}
    outcome, _ = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
