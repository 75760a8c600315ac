"""The native declaration: inputs declared once compile into the node model with their bounds and docs."""
from nodes.arithmetic import IntMath
from nodes.declare import Boolean, Combo, Float, Hidden, Int, Output, Socket, String, node
from nodes.image_basic import EmptyImage


def test_declared_inputs_keep_order_bounds_and_tooltips():
    entry = EmptyImage.SPEC.to_catalogue()
    assert entry["input_order"] == {"required": ["width", "height", "batch_size", "color"]}
    assert entry["input"]["required"]["width"] == ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1,
                                                           "tooltip": "Width in pixels."}]
    assert entry["input"]["required"]["color"][1]["display"] == "color"
    assert entry["output"] == ["IMAGE"] and entry["output_tooltips"][0]
    assert entry["description"] == "An image batch of one solid colour."
    assert entry["python_module"] == "nodes"


def test_every_kind_of_input():
    @node(category="tests", outputs=[Output("INT", "n", tooltip="count", is_list=True)], output_node=True,
          not_idempotent=True, experimental=True)
    class Everything:
        """Doc."""
        i = Int(3, min=0, max=9, control_after_generate=True)
        f = Float(0.5, min=0.0, max=1.0, step=0.05, round=0.01)
        s = String("hi", multiline=True, placeholder="type")
        b = Boolean(True, label_on="yes", label_off="no")
        c = Combo(["x", "y"])
        img = Socket("IMAGE", optional=True, lazy=True)
        raw = Socket("*", optional=True, raw_link=True, force_input=True)
        who = Hidden("UNIQUE_ID")

        async def run(self, ctx, **kw):
            return ([1],)

    spec = Everything.SPEC
    entry = spec.to_catalogue()
    req, opt = entry["input"]["required"], entry["input"]["optional"]
    assert req["i"] == ["INT", {"default": 3, "min": 0, "max": 9, "step": 1, "control_after_generate": True}]
    assert req["f"] == ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "round": 0.01}]
    assert req["s"] == ["STRING", {"default": "hi", "multiline": True, "placeholder": "type"}]
    assert req["b"] == ["BOOLEAN", {"default": True, "label_on": "yes", "label_off": "no"}]
    assert req["c"] == [["x", "y"], {"default": "x"}]
    assert opt["img"] == ["IMAGE", {"lazy": True}]
    assert opt["raw"] == ["*", {"forceInput": True, "rawLink": True}]
    assert entry["input"]["hidden"] == {"who": "UNIQUE_ID"}
    assert entry["output_is_list"] == [True] and entry["output_name"] == ["n"]
    assert entry["output_node"] and entry["experimental"] and spec.not_idempotent and spec.is_async
    assert spec.input_map()["img"].lazy and spec.input_map()["raw"].raw_link


def test_combo_choices_from_a_callable_are_read_each_time():
    folder = ["a.ckpt"]

    @node(category="tests", outputs=[Output("STRING")])
    class Picker:
        name = Combo(lambda services: list(folder))

        def run(self, ctx, name):
            return (name,)

    assert Picker.SPEC.to_catalogue()["input"]["required"]["name"][0] == ["a.ckpt"]
    folder.append("b.ckpt")
    assert Picker.SPEC.to_catalogue()["input"]["required"]["name"][0] == ["a.ckpt", "b.ckpt"]


def test_every_builtin_documents_every_input():
    from nodes import builtin_specs
    for spec in builtin_specs():
        assert spec.description, spec.name
        for inp in spec.inputs:
            if inp.section != "hidden":
                assert inp.options.get("tooltip"), f"{spec.name}.{inp.name} has no tooltip"
    assert IntMath.SPEC.category == "utils/math"
