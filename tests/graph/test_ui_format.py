"""UI-format workflow -> API prompt conversion (graph/ui_format.py), against the real built-in catalogue."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from execution.scheduler import Executor, Job
from graph.ui_format import WorkflowConversionError, is_ui_workflow, ui_to_api
from graph.validation import validate_prompt
from nodes import builtin_catalogue
from nodes.declare import Combo, Float, Int, Output, Socket, node

FIXTURES = Path(__file__).parent / "fixtures"
SUBGRAPH_ID = "9a4b6c1e-0f2d-4d3a-a3b1-5f6e7d8c9b0a"


# ---- test-only node classes: shapes the built-ins do not have

@node(category="test", outputs=[Output("INT")])
class SeedSum:
    """Seed widgets named like a sampler's (no explicit control_after_generate option)."""
    seed = Int(0)
    steps = Int(20)
    noise_seed = Int(0)
    cfg = Float(7.0)

    def run(self, ctx, seed, steps, noise_seed, cfg):
        return (seed + steps + noise_seed,)


@node(category="test", outputs=[Output("IMAGE")])
class LoadImageLike:
    """A combo with an upload button, followed by an ordinary widget."""
    image = Combo(["a.png", "b.png"], image_upload=True)
    strength = Float(1.0)

    def run(self, ctx, image, strength):
        raise NotImplementedError


@node(category="test", outputs=[Output("INT")])
class ForcedInput:
    """An INT that is always a socket (forceInput) and so has no slot in widgets_values."""
    value = Int(0, force_input=True)
    scale = Int(1)

    def run(self, ctx, value, scale):
        return (value * scale,)


@node(category="test", outputs=[Output("IMAGE")])
class NeedsImage:
    image = Socket("IMAGE")

    def run(self, ctx, image):
        return (image,)


@pytest.fixture
def cat():
    catalogue = builtin_catalogue()
    for cls in (SeedSum, LoadImageLike, ForcedInput, NeedsImage):
        catalogue.add(cls.SPEC)
    return catalogue


# ---- builders for small hand-made workflows

def n(node_id, node_type, inputs=(), outputs=(), widgets=None, mode=0):
    entry = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0,
             "mode": mode, "inputs": list(inputs), "outputs": list(outputs), "properties": {}}
    if widgets is not None:
        entry["widgets_values"] = widgets
    return entry


def i(name, kind, link=None, widget=False):
    slot = {"name": name, "type": kind, "link": link}
    if widget:
        slot["widget"] = {"name": name}
    return slot


def o(kind, links=()):
    return {"name": kind, "type": kind, "links": list(links)}


def wf(nodes, links, **extra):
    return {"last_node_id": 0, "last_link_id": 0, "nodes": nodes, "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4, **extra}


def load(name):
    return json.loads((FIXTURES / name).read_text())


def run_prompt(api, cat):
    v = validate_prompt(api, cat)
    assert v.ok, v.response_error()
    outcome = Executor(cat).execute_sync(Job("id", v.prompt, v.outputs, order=v.order))
    assert outcome.completed, outcome.error
    return outcome.outputs


V04_EXPECTED = {
    "1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
    "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "multiply"}},
    "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
}


def to_link_objects(workflow):
    """The same workflow with links in the 1.0 object form."""
    out = copy.deepcopy(workflow)
    out["links"] = [dict(zip(("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"), link))
                    for link in out["links"]]
    out["version"] = 1
    return out


# ---- whole workflows

def test_v04_fixture_converts_validates_and_runs(cat):
    workflow = load("ui_v04_int_math.json")
    assert is_ui_workflow(workflow)
    api = ui_to_api(workflow, cat)
    assert api == V04_EXPECTED
    assert run_prompt(api, cat) == {"3": {"text": ["15"]}}


def test_v10_link_objects_give_the_same_prompt(cat):
    workflow = to_link_objects(load("ui_v04_int_math.json"))
    api = ui_to_api(workflow, cat)
    assert api == V04_EXPECTED
    assert run_prompt(api, cat) == {"3": {"text": ["15"]}}


def test_link_shapes_are_accepted_in_either_version(cat):
    lists_in_v1 = load("ui_v04_int_math.json")
    lists_in_v1["version"] = 1
    objects_in_v04 = to_link_objects(load("ui_v04_int_math.json"))
    objects_in_v04["version"] = 0.4
    mixed = load("ui_v04_int_math.json")
    mixed["links"][1] = to_link_objects(mixed)["links"][1]
    for workflow in (lists_in_v1, objects_in_v04, mixed):
        assert ui_to_api(workflow, cat) == V04_EXPECTED


def test_subgraph_fixture_is_flattened(cat):
    api = ui_to_api(load("ui_v10_subgraph.json"), cat)
    assert api == {
        "5": {"class_type": "PrimitiveInt", "inputs": {"value": 6}},
        "7:1": {"class_type": "IntMath", "inputs": {"a": ["5", 0], "b": 4, "operation": "multiply"}},
        "7:2": {"class_type": "IntMath", "inputs": {"a": ["7:1", 0], "b": 1, "operation": "add"}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7:2", 0]}},
    }
    assert run_prompt(api, cat) == {"8": {"text": ["25"]}}


def test_is_ui_workflow():
    assert is_ui_workflow({"nodes": [], "links": []})
    assert not is_ui_workflow(V04_EXPECTED)
    assert not is_ui_workflow({"nodes": [], "links": None})
    assert not is_ui_workflow({"nodes": {}, "links": []})
    assert not is_ui_workflow([])
    assert not is_ui_workflow(None)


# ---- widget values

def test_seed_control_values_are_skipped(cat):
    full = wf([n(1, "SeedSum", widgets=[42, "randomize", 30, 7, "fixed", 6.5])], [])
    assert ui_to_api(full, cat)["1"]["inputs"] == {"seed": 42, "steps": 30, "noise_seed": 7, "cfg": 6.5}
    # Older files without control values: nothing is skipped.
    bare = wf([n(1, "SeedSum", widgets=[42, 30, 7, 6.5])], [])
    assert ui_to_api(bare, cat)["1"]["inputs"] == {"seed": 42, "steps": 30, "noise_seed": 7, "cfg": 6.5}
    # One control value present: only a control word is taken for one.
    partial = wf([n(1, "SeedSum", widgets=[42, "increment", 30, 7, 6.5])], [])
    assert ui_to_api(partial, cat)["1"]["inputs"] == {"seed": 42, "steps": 30, "noise_seed": 7, "cfg": 6.5}


def test_control_after_generate_option_marks_a_control_value(cat):
    workflow = wf([n(1, "PrimitiveInt", [], [o("INT")], widgets=[9, "decrement"])], [])
    assert ui_to_api(workflow, cat) == {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 9}}}


def test_widget_converted_to_input_and_linked(cat):
    workflow = wf([
        n(1, "PrimitiveInt", [], [o("INT", [1])], widgets=[4, "fixed"]),
        n(2, "IntMath", [i("b", "INT", 1, widget=True)], [o("INT", [2])], widgets=[10, 999, "subtract"]),
        n(3, "PreviewAny", [i("source", "*", 2)]),
    ], [[1, 1, 0, 2, 1, "INT"], [2, 2, 0, 3, 0, "INT"]])
    api = ui_to_api(workflow, cat)
    assert api["2"]["inputs"] == {"a": 10, "b": ["1", 0], "operation": "subtract"}
    assert list(api["2"]["inputs"]) == ["a", "b", "operation"]  # catalogue order
    assert run_prompt(api, cat) == {"3": {"text": ["6"]}}


def test_force_input_has_no_widget_slot(cat):
    workflow = wf([n(1, "ForcedInput", [i("value", "INT")], [o("INT")], widgets=[3])], [])
    assert ui_to_api(workflow, cat)["1"]["inputs"] == {"scale": 3}


def test_dict_widgets_values_map_by_name(cat):
    workflow = wf([n(1, "IntMath", [], [o("INT")], widgets={"operation": "max", "b": 2, "a": 1, "junk": 0})], [])
    assert ui_to_api(workflow, cat)["1"]["inputs"] == {"a": 1, "b": 2, "operation": "max"}


def test_image_upload_extra_value(cat):
    with_upload = wf([n(1, "LoadImageLike", [], [o("IMAGE")], widgets=["b.png", "image", 0.5])], [])
    assert ui_to_api(with_upload, cat)["1"]["inputs"] == {"image": "b.png", "strength": 0.5}
    without = wf([n(1, "LoadImageLike", [], [o("IMAGE")], widgets=["b.png", 0.5])], [])
    assert ui_to_api(without, cat)["1"]["inputs"] == {"image": "b.png", "strength": 0.5}


def test_missing_and_null_widget_values_are_omitted(cat):
    short = wf([n(1, "IntMath", [], [o("INT")], widgets=[1])], [])
    assert ui_to_api(short, cat)["1"]["inputs"] == {"a": 1}
    nulls = wf([n(1, "IntMath", [], [o("INT")], widgets=[None, 2, "add"])], [])
    assert ui_to_api(nulls, cat)["1"]["inputs"] == {"b": 2, "operation": "add"}
    absent = wf([n(1, "IntMath", [], [o("INT")])], [])
    assert ui_to_api(absent, cat)["1"]["inputs"] == {}


def test_list_literals_are_wrapped(cat):
    workflow = wf([n(1, "PrimitiveString", [], [o("STRING")], widgets=[["x", "y"]])], [])
    assert ui_to_api(workflow, cat)["1"]["inputs"] == {"value": {"__value__": ["x", "y"]}}


# ---- muted, bypassed and virtual nodes

def test_muted_node_is_dropped_with_its_links(cat):
    workflow = wf([
        n(1, "PrimitiveInt", [], [o("INT", [1])], widgets=[4, "fixed"], mode=2),
        n(2, "IntMath", [i("a", "INT", 1, widget=True)], [o("INT", [2])], widgets=[10, 2, "add"]),
        n(3, "PreviewAny", [i("source", "*", 2)]),
        n(4, "NoSuchNode", mode=2),  # muted nodes are never looked up
    ], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "INT"]])
    api = ui_to_api(workflow, cat)
    assert set(api) == {"2", "3"}
    assert api["2"]["inputs"] == {"b": 2, "operation": "add"}  # the widget value under the link is not used
    assert not validate_prompt(api, cat).ok  # validation reports the missing required input


def test_bypassed_node_is_routed_through(cat):
    workflow = wf([
        n(1, "EmptyImage", [], [o("IMAGE", [1])], widgets=[8, 4, 1, 0xFFFFFF]),
        n(2, "ImageInvert", [i("image", "IMAGE", 1)], [o("IMAGE", [2])], mode=4),
        n(3, "PreviewAny", [i("source", "*", 2)]),
    ], [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]])
    api = ui_to_api(workflow, cat)
    assert api == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0xFFFFFF}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    text = run_prompt(api, cat)["3"]["text"][0]
    assert "[1, 4, 8, 3]" in text


def test_bypass_prefers_same_slot_then_first_matching_type(cat):
    workflow = wf([
        n(1, "EmptyImage", [], [o("IMAGE", [1])], widgets=[8, 8, 1, 0]),
        n(2, "EmptyImage", [], [o("IMAGE", [2])], widgets=[4, 4, 1, 0]),
        n(3, "PrimitiveInt", [], [o("INT", [3])], widgets=[1, "fixed"]),
        # An unknown type is fine while bypassed: it never runs.
        n(4, "SomePackMixer", [i("first", "IMAGE", 1), i("second", "IMAGE", 2)],
          [o("IMAGE", [4]), o("IMAGE", [5])], mode=4),
        n(5, "SomePackScaler", [i("amount", "INT", 3), i("pixels", "IMAGE", 6)], [o("IMAGE", [7])], mode=4),
        n(6, "NeedsImage", [i("image", "IMAGE", 4)], [o("IMAGE")]),
        n(7, "NeedsImage", [i("image", "IMAGE", 5)], [o("IMAGE", [6])]),
        n(8, "NeedsImage", [i("image", "IMAGE", 7)], [o("IMAGE")]),
    ], [[1, 1, 0, 4, 0, "IMAGE"], [2, 2, 0, 4, 1, "IMAGE"], [3, 3, 0, 5, 0, "INT"], [4, 4, 0, 6, 0, "IMAGE"],
        [5, 4, 1, 7, 0, "IMAGE"], [6, 7, 0, 5, 1, "IMAGE"], [7, 5, 0, 8, 0, "IMAGE"]])
    api = ui_to_api(workflow, cat)
    assert api["6"]["inputs"] == {"image": ["1", 0]}  # slot 0 -> input 0
    assert api["7"]["inputs"] == {"image": ["2", 0]}  # slot 1 -> input 1
    assert api["8"]["inputs"] == {"image": ["7", 0]}  # slot 0 is INT: first IMAGE input instead
    assert "4" not in api and "5" not in api


def test_bypass_without_matching_input_drops_the_link(cat):
    workflow = wf([
        n(1, "PrimitiveInt", [], [o("INT", [1])], widgets=[1, "fixed"]),
        n(2, "SomePackLoader", [i("index", "INT", 1)], [o("IMAGE", [2])], mode=4),
        n(3, "NeedsImage", [i("image", "IMAGE", 2)], [o("IMAGE")]),
    ], [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 3, 0, "IMAGE"]])
    assert ui_to_api(workflow, cat)["3"]["inputs"] == {}


def test_reroute_chains_are_followed(cat):
    workflow = wf([
        n(1, "PrimitiveInt", [], [o("INT", [1])], widgets=[7, "fixed"]),
        n(10, "Reroute", [i("", "*", 1)], [o("INT", [2])]),
        n(11, "Reroute", [i("", "*", 2)], [o("INT", [3, 4])]),
        n(2, "IntMath", [i("a", "INT", 3, widget=True), i("b", "INT", 4, widget=True)], [o("INT", [5])],
          widgets=[0, 0, "multiply"]),
        n(12, "Reroute", [i("", "*", None)], [o("*", [6])]),  # a reroute fed by nothing
        n(3, "PreviewAny", [i("source", "*", 5)]),
        n(4, "ForcedInput", [i("value", "INT", 6)], [o("INT")], widgets=[2]),
    ], [[1, 1, 0, 10, 0, "INT"], [2, 10, 0, 11, 0, "INT"], [3, 11, 0, 2, 0, "INT"], [4, 11, 0, 2, 1, "INT"],
        [5, 2, 0, 3, 0, "INT"], [6, 12, 0, 4, 0, "*"]])
    api = ui_to_api(workflow, cat)
    assert set(api) == {"1", "2", "3", "4"}
    assert api["2"]["inputs"] == {"a": ["1", 0], "b": ["1", 0], "operation": "multiply"}
    assert api["4"]["inputs"] == {"scale": 2}
    assert run_prompt(api, cat)["3"] == {"text": ["49"]}


def test_primitive_node_gives_a_literal(cat):
    workflow = wf([
        n(1, "PrimitiveNode", [], [{"name": "INT", "type": "INT", "links": [1], "widget": {"name": "b"}}],
          widgets=[17, "fixed"]),
        n(2, "IntMath", [i("b", "INT", 1, widget=True)], [o("INT")], widgets=[1, 0, "add"]),
        n(3, "PrimitiveNode", [], [o("INT", [2])], widgets=[]),  # nothing to give: the input is omitted
        n(4, "IntMath", [i("a", "INT", 2, widget=True)], [o("INT")], widgets=[5, 6, "add"]),
        n(5, "MarkdownNote", widgets=["# notes"]),
    ], [[1, 1, 0, 2, 1, "INT"], [2, 3, 0, 4, 0, "INT"]])
    api = ui_to_api(workflow, cat)
    assert api == {
        "2": {"class_type": "IntMath", "inputs": {"a": 1, "b": 17, "operation": "add"}},
        "4": {"class_type": "IntMath", "inputs": {"b": 6, "operation": "add"}},
    }


# ---- subgraphs

def test_nested_subgraphs_and_unconnected_subgraph_inputs(cat):
    inner_id, outer_id = "11111111-aaaa-4aaa-8aaa-000000000001", "22222222-bbbb-4bbb-8bbb-000000000002"
    inner = {
        "id": inner_id, "name": "Add", "inputs": [{"name": "x", "type": "INT", "linkIds": [1]},
                                                  {"name": "y", "type": "INT", "linkIds": [2]}],
        "outputs": [{"name": "sum", "type": "INT", "linkIds": [3]}],
        "nodes": [n(1, "IntMath", [i("a", "INT", 1, widget=True), i("b", "INT", 2, widget=True)], [o("INT", [3])],
                    widgets=[0, 100, "add"])],
        "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
                  {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "INT"},
                  {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "INT"}],
    }
    outer = {
        "id": outer_id, "name": "Wrap", "inputs": [{"name": "v", "type": "INT", "linkIds": [1]}],
        "outputs": [{"name": "out", "type": "INT", "linkIds": [2]}],
        # Links given as lists inside a 1.0 subgraph: accepted too.
        "nodes": [n(3, inner_id, [i("x", "INT", 1), i("y", "INT")], [o("INT", [2])])],
        "links": [[1, -10, 0, 3, 0, "INT"], [2, 3, 0, -20, 0, "INT"]],
    }
    workflow = {
        "version": 1, "definitions": {"subgraphs": [outer, inner]},
        "nodes": [n(1, "PrimitiveInt", [], [o("INT", [1])], widgets=[5, "fixed"]),
                  n(7, outer_id, [i("v", "INT", 1)], [o("INT", [2])]),
                  n(8, "PreviewAny", [i("source", "*", 2)]),
                  n(9, outer_id, [i("v", "INT", None)], [o("INT")], mode=2)],
        "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 7, "target_slot": 0, "type": "INT"},
                  {"id": 2, "origin_id": 7, "origin_slot": 0, "target_id": 8, "target_slot": 0, "type": "INT"}],
    }
    api = ui_to_api(workflow, cat)
    assert api == {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
        # y is not connected on the instance: the inner widget value stays.
        "7:3:1": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 100, "operation": "add"}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7:3:1", 0]}},
    }
    assert run_prompt(api, cat) == {"8": {"text": ["105"]}}


def test_bypassed_subgraph_instance_passes_through(cat):
    workflow = load("ui_v10_subgraph.json")
    next(node for node in workflow["nodes"] if node["id"] == 7)["mode"] = 4
    api = ui_to_api(workflow, cat)
    assert api == {"5": {"class_type": "PrimitiveInt", "inputs": {"value": 6}},
                   "8": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}}}


def test_subgraph_containing_itself_is_refused(cat):
    sub_id = "33333333-cccc-4ccc-8ccc-000000000003"
    workflow = {"version": 1, "links": [],
                "definitions": {"subgraphs": [{"id": sub_id, "nodes": [n(1, sub_id)], "links": []}]},
                "nodes": [n(1, sub_id)]}
    with pytest.raises(WorkflowConversionError, match="contains an instance of itself"):
        ui_to_api(workflow, cat)


# ---- malformed input

def _base():
    return load("ui_v04_int_math.json")


def _set(path, value):
    def mutate(workflow):
        target = workflow
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return workflow
    return mutate


def _drop(path):
    def mutate(workflow):
        target = workflow
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return workflow
    return mutate


MALFORMED = [
    ("not a dict", lambda w: [w], "must be a JSON object"),
    ("nodes not a list", _set(["nodes"], {"1": {}}), "'nodes' must be a list"),
    ("nodes missing", _drop(["nodes"]), "'nodes' must be a list"),
    ("node not a dict", _set(["nodes", 0], "PrimitiveInt"), r"nodes\[0\] must be an object"),
    ("node without id", _drop(["nodes", 1, "id"]), r"nodes\[1\] has no valid 'id'"),
    ("node with bool id", _set(["nodes", 1, "id"], True), r"nodes\[1\] has no valid 'id'"),
    ("node without type", _drop(["nodes", 1, "type"]), "node #2 has no valid 'type'"),
    ("duplicate id", _set(["nodes", 2, "id"], 2), "node id 2 is used by more than one node"),
    ("unknown type", _set(["nodes", 1, "type"], "Frobnicate"), r"^Node #2: unknown node type 'Frobnicate'$"),
    ("bad mode", _set(["nodes", 1, "mode"], "bypass"), "'mode' must be an integer"),
    ("inputs not a list", _set(["nodes", 1, "inputs"], {"a": 1}), "'inputs' must be a list"),
    ("input not a dict", _set(["nodes", 1, "inputs", 0], 1), r"inputs\[0\] must be an object"),
    ("bad input link id", _set(["nodes", 1, "inputs", 0, "link"], 1.5), "invalid link id 1.5"),
    ("linked input without name", _set(["nodes", 1, "inputs", 0], {"type": "INT", "link": 1}),
     "linked input 0 has no name"),
    ("widgets_values not a list", _set(["nodes", 1, "widgets_values"], "3"), "'widgets_values' must be a list"),
    ("links not a list", _set(["links"], {"1": [1, 1, 0, 2, 0, "INT"]}), "'links' must be a list"),
    ("short link", _set(["links", 0], [1, 1, 0]), "must be \\[id, origin_id"),
    ("link not a list", _set(["links", 0], "1-2"), "must be a list or an object"),
    ("link object missing keys", _set(["links", 0], {"id": 1, "origin_id": 1}), "is missing origin_slot"),
    ("bad link slot", _set(["links", 0], [1, 1, "0", 2, 0, "INT"]), "invalid origin_slot '0'"),
    ("negative link slot", _set(["links", 0], [1, 1, -1, 2, 0, "INT"]), "invalid origin_slot -1"),
    ("bad link origin", _set(["links", 0], [1, None, 0, 2, 0, "INT"]), "invalid origin_id None"),
    ("duplicate link id", _set(["links", 1], [1, 2, 0, 3, 0, "INT"]), "link id 1 is used by more than one"),
    ("link to a missing node", _set(["links", 0], [1, 99, 0, 2, 0, "INT"]),
     r"Node #2 \(IntMath\) input 'a': link 1 comes from node #99, which is not in workflow"),
    ("input link not in the table", _set(["nodes", 1, "inputs", 0, "link"], 42),
     r"Node #2 \(IntMath\) input 'a': link 42 is not in the links of workflow"),
    ("link from a note", _set(["links", 0], [1, 4, 0, 2, 0, "INT"]), r"from node #4 \(Note\), which has no outputs"),
    ("definitions not a dict", _set(["definitions"], []), "'definitions' must be an object"),
    ("subgraphs not a list", _set(["definitions"], {"subgraphs": {}}), "'definitions.subgraphs' must be a list"),
    ("subgraph without id", _set(["definitions"], {"subgraphs": [{"nodes": []}]}), r"subgraphs\[0\] has no valid"),
]


@pytest.mark.parametrize("mutate, message", [pytest.param(m, msg, id=name) for name, m, msg in MALFORMED])
def test_malformed_workflows_raise_a_clear_error(cat, mutate, message):
    with pytest.raises(WorkflowConversionError, match=message):
        ui_to_api(mutate(_base()), cat)


def test_reroute_loop_is_reported(cat):
    workflow = wf([
        n(10, "Reroute", [i("", "*", 2)], [o("*", [1])]),
        n(11, "Reroute", [i("", "*", 1)], [o("*", [2, 3])]),
        n(3, "PreviewAny", [i("source", "*", 3)]),
    ], [[1, 10, 0, 11, 0, "*"], [2, 11, 0, 10, 0, "*"], [3, 11, 0, 3, 0, "*"]])
    with pytest.raises(WorkflowConversionError, match="loop"):
        ui_to_api(workflow, cat)


def test_malformed_subgraph_definition(cat):
    sub_id = "44444444-dddd-4ddd-8ddd-000000000004"
    workflow = {"version": 1, "links": [], "nodes": [n(1, sub_id)],
                "definitions": {"subgraphs": [{"id": sub_id, "name": "Broken", "nodes": None, "links": []}]}}
    with pytest.raises(WorkflowConversionError, match="Subgraph 'Broken': 'nodes' must be a list"):
        ui_to_api(workflow, cat)


def test_subgraph_input_at_the_root_is_a_missing_node(cat):
    workflow = wf([n(3, "PreviewAny", [i("source", "*", 1)])], [[1, -10, 0, 3, 0, "*"]])
    with pytest.raises(WorkflowConversionError, match="comes from node #-10"):
        ui_to_api(workflow, cat)


def test_flattened_id_clash_is_reported(cat):
    workflow = load("ui_v10_subgraph.json")
    workflow["nodes"].append(n("7:1", "PrimitiveInt", [], [o("INT")], widgets=[1, "fixed"]))
    with pytest.raises(WorkflowConversionError, match="produced twice"):
        ui_to_api(workflow, cat)
