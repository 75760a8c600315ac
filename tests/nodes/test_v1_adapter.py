"""ComfyUI-style classes compile into the one node model, and their catalogue entries have the §4 shape."""
import pytest

from nodes.v1_adapter import V1DefinitionError, compile_v1
from tests.fixtures import v1_pack


def test_catalogue_entry_shape():
    spec = compile_v1(v1_pack.V1Add, "V1Add", python_module="custom_nodes.v1_pack", display_name="Add (V1)")
    entry = spec.to_catalogue()
    assert entry["input"] == {"required": {"a": ["INT", {"default": 0}], "b": ["INT", {"default": 0}]}}
    assert entry["input_order"] == {"required": ["a", "b"]}
    assert entry["output"] == ["INT"] and entry["output_name"] == ["sum"]
    assert entry["output_tooltips"] == ["a + b"] and entry["output_is_list"] == [False]
    assert entry["name"] == "V1Add" and entry["display_name"] == "Add (V1)"
    assert entry["description"] == "Adds two integers." and entry["category"] == "tests"
    assert entry["python_module"] == "custom_nodes.v1_pack"
    assert entry["output_node"] is False and entry["deprecated"] is False and entry["experimental"] is False


def test_flags_and_hidden_inputs():
    collect = compile_v1(v1_pack.V1Collect)
    assert collect.output_node and collect.input_is_list
    listy = compile_v1(v1_pack.V1MakeList)
    assert listy.to_catalogue()["output_is_list"] == [True]
    counter = compile_v1(v1_pack.V1Counter)
    assert counter.not_idempotent and counter.create is v1_pack.V1Counter
    who = compile_v1(v1_pack.V1WhoAmI).to_catalogue()
    assert who["input"]["hidden"] == {"unique_id": "UNIQUE_ID", "prompt": "PROMPT",
                                      "extra_pnginfo": "EXTRA_PNGINFO", "dynprompt": "DYNPROMPT"}
    assert compile_v1(v1_pack.V1Sleep).is_async
    assert compile_v1(v1_pack.V1AsyncLazySwitch).is_async
    assert not compile_v1(v1_pack.V1LazySwitch).is_async


def test_combo_forms_and_any_types():
    class Combos:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"old": (["a", "b"], {"default": "b"}),
                                 "new": ("COMBO", {"options": ["x", "y"], "multiselect": False}),
                                 "anything": (v1_pack.ANY,)},
                    "optional": {"maybe": ("IMAGE", {"tooltip": "t"})}}
        RETURN_TYPES = (v1_pack.ANY,)
        FUNCTION = "run"
        DEPRECATED = True
        EXPERIMENTAL = True

        def run(self, **kw):
            return (None,)

    spec = compile_v1(Combos)
    entry = spec.to_catalogue()
    assert entry["input"]["required"]["old"] == [["a", "b"], {"default": "b"}]
    assert entry["input"]["required"]["new"] == [["x", "y"], {"multiselect": False}]
    assert entry["input"]["required"]["anything"] == ["*"]
    assert entry["input"]["optional"]["maybe"] == ["IMAGE", {"tooltip": "t"}]
    assert entry["input_order"] == {"required": ["old", "new", "anything"], "optional": ["maybe"]}
    assert entry["deprecated"] and entry["experimental"] and entry["category"] == "sd"
    # the custom __ne__ survives compilation, so type checks treat it as "any"
    anything = spec.input_map()["anything"].type
    assert not (anything != "IMAGE")


def test_input_types_is_read_fresh_each_time():
    class Listing:
        files = ["one.safetensors"]

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"name": (list(cls.files),)}}
        RETURN_TYPES = ("STRING",)
        FUNCTION = "run"

        def run(self, name):
            return (name,)

    spec = compile_v1(Listing)
    assert spec.to_catalogue()["input"]["required"]["name"][0] == ["one.safetensors"]
    Listing.files.append("two.safetensors")
    assert spec.to_catalogue()["input"]["required"]["name"][0] == ["one.safetensors", "two.safetensors"]


def test_validate_inputs_claims():
    assert compile_v1(v1_pack.V1ValidateClassmethod).validate_claims == {"value"}
    assert compile_v1(v1_pack.V1ValidatePlain).validate_claims == {"value"}
    typed = compile_v1(v1_pack.V1ValidateTypes)
    assert typed.validate_wants_types and typed.validate_claims == frozenset()
    assert compile_v1(v1_pack.V1ValidateKwargs).validate_takes_all


@pytest.mark.parametrize("attrs,message", [
    ({"RETURN_TYPES": ("INT",), "FUNCTION": "run"}, "INPUT_TYPES"),
    ({"INPUT_TYPES": classmethod(lambda cls: {}), "FUNCTION": "run"}, "RETURN_TYPES"),
    ({"INPUT_TYPES": classmethod(lambda cls: {}), "RETURN_TYPES": (), "FUNCTION": "nope"}, "nope"),
    ({"INPUT_TYPES": classmethod(lambda cls: {"required": {"x": 5}}), "RETURN_TYPES": (), "FUNCTION": "run",
      "run": lambda self, x: ()}, "'x'"),
])
def test_broken_definitions_are_rejected_clearly(attrs, message):
    attrs.setdefault("run", lambda self: ())
    cls = type("Broken", (), attrs)
    with pytest.raises(V1DefinitionError, match=message):
        compile_v1(cls)


def test_a_class_without_function_registers_and_fails_only_when_run(engine):
    """Display-only nodes (notes, info panels) have no FUNCTION; ComfyUI lists them, and so do we."""
    cls = type("InfoOnly", (), {"INPUT_TYPES": classmethod(lambda c: {"required": {"text": ("STRING", {})}}),
                                "RETURN_TYPES": ("STRING",), "CATEGORY": "tests"})
    spec = compile_v1(cls, "InfoOnly")
    assert spec.to_catalogue()["input"]["required"]["text"] == ["STRING"]
    engine.catalogue.add(spec)
    outcome, _ = engine.run({"1": {"class_type": "InfoOnly", "inputs": {"text": "hi"}},
                             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    assert outcome.status == "error"
    assert "InfoOnly defines no FUNCTION" in outcome.error["exception_message"]
