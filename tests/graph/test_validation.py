"""Prompt validation: the error types and node_errors structure of docs/architecture.md §4.1, outputs-driven (§5)."""
import pytest

from graph.validation import validate_prompt
from tests.conftest import make_catalogue


@pytest.fixture(scope="module")
def cat():
    return make_catalogue()


def node(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def good_prompt():
    return {
        "1": node("PrimitiveInt", value=3),
        "2": node("IntMath", a=["1", 0], b=4, operation="add"),
        "3": node("PreviewAny", source=["2", 0]),
    }


def only_error(result, node_id):
    entry = result.node_errors[node_id]
    assert len(entry["errors"]) == 1, entry
    return entry["errors"][0]


@pytest.mark.parametrize("bad", [None, [], "text", 5, [["1", 0]]])
def test_prompt_must_be_an_object(cat, bad):
    result = validate_prompt(bad, cat)
    assert not result.ok and result.error["type"] == "invalid_prompt"
    assert result.node_errors == {}


def test_missing_class_type_and_unknown_class(cat):
    result = validate_prompt({"7": {"inputs": {}}}, cat)
    assert result.error["type"] == "invalid_prompt" and "#7" in result.error["details"]
    result = validate_prompt({"7": node("NoSuchNode")}, cat)
    assert result.error["type"] == "invalid_prompt"
    assert "NoSuchNode" in result.error["message"] and "#7" in result.error["details"]
    result = validate_prompt({"7": "not a node"}, cat)
    assert result.error["type"] == "invalid_prompt"
    result = validate_prompt({"7": {"class_type": "PrimitiveInt", "inputs": [1]}}, cat)
    assert result.error["type"] == "invalid_prompt"


def test_no_outputs(cat):
    result = validate_prompt({"1": node("PrimitiveInt", value=1)}, cat)
    assert result.error["type"] == "prompt_no_outputs"
    result = validate_prompt(good_prompt(), cat, partial_execution_targets=[])
    assert result.error["type"] == "prompt_no_outputs"


def test_valid_prompt_coerces_literals_and_orders_nodes(cat):
    prompt = good_prompt()
    prompt["2"]["inputs"]["b"] = "4"
    result = validate_prompt(prompt, cat)
    assert result.ok and result.error is None and result.node_errors == {}
    assert result.outputs == ["3"]
    assert result.prompt["2"]["inputs"]["b"] == 4
    assert prompt["2"]["inputs"]["b"] == "4"  # the caller's prompt is not modified
    assert result.order.index("1") < result.order.index("2") < result.order.index("3")


@pytest.mark.parametrize("kind,value,expected", [
    ("INT", "12", 12), ("INT", 3.0, 3), ("INT", True, 1),
    ("FLOAT", "2.5", 2.5), ("FLOAT", 2, 2.0),
    ("STRING", 12, "12"),
    ("BOOLEAN", "false", False), ("BOOLEAN", "True", True), ("BOOLEAN", 0, False),
])
def test_literal_coercion(cat, kind, value, expected):
    cls = {"INT": "PrimitiveInt", "FLOAT": "PrimitiveFloat", "STRING": "PrimitiveString",
           "BOOLEAN": "PrimitiveBoolean"}[kind]
    result = validate_prompt({"1": node(cls, value=value), "2": node("PreviewAny", source=["1", 0])}, cat)
    assert result.ok
    coerced = result.prompt["1"]["inputs"]["value"]
    assert coerced == expected and type(coerced) is type(expected)


@pytest.mark.parametrize("cls,value", [("PrimitiveInt", "abc"), ("PrimitiveInt", "1.5"), ("PrimitiveFloat", "x"),
                                       ("PrimitiveBoolean", "maybe"), ("PrimitiveInt", {"a": 1})])
def test_invalid_literal_types(cat, cls, value):
    result = validate_prompt({"1": node(cls, value=value), "2": node("PreviewAny", source=["1", 0])}, cat)
    assert not result.ok
    assert result.error["type"] == "prompt_outputs_failed_validation"
    err = only_error(result, "1")
    assert err["type"] == "invalid_input_type" and err["extra_info"]["input_name"] == "value"
    assert result.node_errors["1"]["dependent_outputs"] == ["2"]
    assert result.node_errors["1"]["class_type"] == cls


def test_bounds(cat):
    prompt = {"1": node("EmptyImage", width=0, height=512, batch_size=1, color=0),
              "2": node("PreviewAny", source=["1", 0])}
    err = only_error(validate_prompt(prompt, cat), "1")
    assert err["type"] == "value_smaller_than_min" and err["extra_info"]["input_name"] == "width"
    assert err["extra_info"]["received_value"] == 0
    prompt["1"]["inputs"].update(width=512, color=0x1000000)
    err = only_error(validate_prompt(prompt, cat), "1")
    assert err["type"] == "value_bigger_than_max" and err["extra_info"]["input_name"] == "color"


def test_combo_value_not_in_list(cat):
    prompt = good_prompt()
    prompt["2"]["inputs"]["operation"] = "teleport"
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "value_not_in_list" and "teleport" in err["details"]
    assert err["extra_info"]["input_name"] == "operation"


def test_required_input_missing(cat):
    prompt = good_prompt()
    del prompt["2"]["inputs"]["operation"]
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "required_input_missing" and err["extra_info"]["input_name"] == "operation"


@pytest.mark.parametrize("link", [["1"], ["1", 0, 0], ["1", "zero"], [None, 0], [["1"], 0]])
def test_bad_link_shapes(cat, link):
    prompt = good_prompt()
    prompt["2"]["inputs"]["a"] = link
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "bad_linked_input" and err["extra_info"]["input_name"] == "a"


def test_link_to_missing_node_or_slot(cat):
    prompt = good_prompt()
    prompt["2"]["inputs"]["a"] = ["99", 0]
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "bad_linked_input" and "99" in err["message"]
    prompt["2"]["inputs"]["a"] = ["1", 5]
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "bad_linked_input" and "5" in err["message"]


def test_integer_node_ids_in_links_are_accepted(cat):
    prompt = good_prompt()
    prompt["2"]["inputs"]["a"] = [1, 0]
    result = validate_prompt(prompt, cat)
    assert result.ok and result.prompt["2"]["inputs"]["a"] == ["1", 0]


def test_return_type_mismatch_and_wildcards_and_unions(cat):
    prompt = {"1": node("PrimitiveString", value="x"), "2": node("IntMath", a=["1", 0], b=1, operation="add"),
              "3": node("PreviewAny", source=["2", 0])}
    err = only_error(validate_prompt(prompt, cat), "2")
    assert err["type"] == "return_type_mismatch"
    assert err["extra_info"]["received_type"] == "STRING" and err["extra_info"]["input_name"] == "a"
    # "*" accepts anything; a union accepts any member; a custom AnyType (__ne__ False) matches everything
    ok = {"1": node("PrimitiveString", value="x"), "2": node("PreviewAny", source=["1", 0]),
          "3": node("PrimitiveFloat", value=1.5), "4": node("Compare", a=["3", 0], b=["1", 0], comparison="=="),
          "5": node("PreviewAny", source=["4", 0]), "6": node("V1Const", value=1),
          "7": node("V1LazySwitch", switch=True, on_true=["6", 0], on_false=["1", 0]),
          "8": node("V1Add", a=["7", 0], b=1), "9": node("V1Collect", value=["8", 0])}
    assert validate_prompt(ok, cat).ok


def test_invalid_outputs_are_dropped_and_the_rest_kept(cat):
    prompt = good_prompt()
    prompt["4"] = node("PrimitiveInt", value="bad")
    prompt["5"] = node("PreviewAny", source=["4", 0])
    result = validate_prompt(prompt, cat)
    assert result.ok and result.outputs == ["3"]
    assert set(result.node_errors) == {"4"}
    assert result.node_errors["4"]["dependent_outputs"] == ["5"]
    assert "4" not in result.order and "5" not in result.order


def test_shared_bad_node_lists_every_dependent_output(cat):
    prompt = {"1": node("PrimitiveInt", value="bad"), "2": node("PreviewAny", source=["1", 0]),
              "3": node("PreviewAny", source=["1", 0])}
    result = validate_prompt(prompt, cat)
    assert not result.ok
    assert sorted(result.node_errors["1"]["dependent_outputs"]) == ["2", "3"]
    assert "1 (PrimitiveInt)" in result.error["details"]


def test_only_nodes_feeding_outputs_are_validated(cat):
    prompt = good_prompt()
    prompt["junk"] = node("IntMath", a=["nowhere", 0], b="x", operation="?")  # feeds no output
    result = validate_prompt(prompt, cat)
    assert result.ok and result.node_errors == {}


def test_partial_execution_targets(cat):
    prompt = good_prompt()
    prompt["4"] = node("PrimitiveInt", value="bad")
    prompt["5"] = node("PreviewAny", source=["4", 0])
    result = validate_prompt(prompt, cat, partial_execution_targets=["3"])
    assert result.ok and result.outputs == ["3"] and result.node_errors == {}
    assert validate_prompt(prompt, cat, partial_execution_targets="3").error["type"] == "invalid_prompt"


def test_cycle_is_reported_naming_the_cycle(cat):
    prompt = {
        "1": node("IntMath", a=["3", 0], b=1, operation="add"),
        "2": node("IntMath", a=["1", 0], b=1, operation="add"),
        "3": node("IntMath", a=["2", 0], b=1, operation="add"),
        "4": node("PreviewAny", source=["3", 0]),
    }
    result = validate_prompt(prompt, cat)
    assert not result.ok
    cycle_errors = [(nid, e) for nid, entry in result.node_errors.items() for e in entry["errors"]]
    assert len(cycle_errors) == 1
    closer, err = cycle_errors[0]
    assert err["type"] == "bad_linked_input"
    assert set(err["extra_info"]["cycle"]) == {"1", "2", "3"}
    assert err["extra_info"]["cycle"][0] == err["extra_info"]["cycle"][-1]
    assert "cycle" in err["message"] and all(n in err["message"] for n in "123")
    assert err["extra_info"]["input_name"] == "a"


def test_self_loop(cat):
    prompt = {"1": node("IntMath", a=["1", 0], b=1, operation="add"), "2": node("PreviewAny", source=["1", 0])}
    result = validate_prompt(prompt, cat)
    assert not result.ok and result.node_errors["1"]["errors"][0]["extra_info"]["cycle"] == ["1", "1"]


def test_deep_chain_does_not_hit_recursion_limits(cat):
    prompt = {"0": node("PrimitiveInt", value=0)}
    for i in range(1, 5000):
        prompt[str(i)] = node("IntMath", a=[str(i - 1), 0], b=1, operation="add")
    prompt["out"] = node("PreviewAny", source=["4999", 0])
    result = validate_prompt(prompt, cat)
    assert result.ok and len(result.order) == 5001


# -- VALIDATE_INPUTS in its V1 forms ------------------------------------------------------------------------------
def v1(cls, **inputs):
    return {"1": node(cls, **inputs), "2": node("V1Collect", value=["1", 0])}


def test_validate_inputs_classmethod_claims_its_input(cat):
    assert validate_prompt(v1("V1ValidateClassmethod", value=50), cat).ok  # built-in max skipped
    err = only_error(validate_prompt(v1("V1ValidateClassmethod", value=7), cat), "1")
    assert err["type"] == "custom_validation_failed" and "seven is not allowed" in err["details"]


def test_validate_inputs_plain_function_and_async(cat):
    assert validate_prompt(v1("V1ValidatePlain", value=1), cat).ok
    err = only_error(validate_prompt(v1("V1ValidatePlain", value=-1), cat), "1")
    assert err["type"] == "custom_validation_failed" and "negative" in err["details"]
    assert validate_prompt(v1("V1ValidateAsync", value=12), cat).ok
    err = only_error(validate_prompt(v1("V1ValidateAsync", value=13), cat), "1")
    assert "unlucky" in err["details"]


def test_validate_inputs_with_input_types_replaces_the_type_check(cat):
    prompt = {"0": node("V1Const", value=1), "1": node("V1ValidateTypes", value=["0", 0]),
              "2": node("V1Collect", value=["1", 0])}
    assert validate_prompt(prompt, cat).ok  # INT into FLOAT accepted by the hook
    prompt["0"] = node("PrimitiveString", value="x")
    err = only_error(validate_prompt(prompt, cat), "1")
    assert err["type"] == "custom_validation_failed" and "STRING" in err["details"]


def test_validate_inputs_with_kwargs_takes_every_literal(cat):
    assert validate_prompt(v1("V1ValidateKwargs", a=50, b=40), cat).ok  # max 5 skipped for all
    err = only_error(validate_prompt(v1("V1ValidateKwargs", a=60, b=40), cat), "1")
    assert "sum too large" in err["details"]


def test_validate_inputs_async_inside_a_running_loop(cat):
    import asyncio

    async def inside():
        return validate_prompt(v1("V1ValidateAsync", value=13), cat)
    result = asyncio.run(inside())
    assert only_error(result, "1")["type"] == "custom_validation_failed"


def test_a_broken_input_types_is_reported_on_the_node(cat):
    from nodes.v1_adapter import compile_v1

    class Flaky:
        broken = False

        @classmethod
        def INPUT_TYPES(cls):
            if cls.broken:
                raise RuntimeError("folder vanished")
            return {"required": {"value": ("INT",)}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, value):
            return (value,)

    local = make_catalogue()
    local.add(compile_v1(Flaky, "Flaky"))
    Flaky.broken = True
    result = validate_prompt(v1("Flaky", value=1), local)
    err = only_error(result, "1")
    assert err["type"] == "exception_during_validation" and "folder vanished" in err["details"]


def test_literal_lists_stay_distinct_from_links(cat):
    prompt = {"1": node("PreviewAny", source={"__value__": ["1", 0]})}
    result = validate_prompt(prompt, cat)
    assert result.ok
    assert result.prompt["1"]["inputs"]["source"] == {"__value__": ["1", 0]}


MALFORMED = [
    {"1": {"class_type": 5}},
    {"1": {"class_type": ["PreviewAny"]}},
    {"1": {"class_type": "PreviewAny", "inputs": None}},
    {"1": {"class_type": "PreviewAny", "inputs": {"source": {"__value__": None}}}},
    {"1": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}, "extra": {"x": [1]}}},
    {"1": {"class_type": "IntMath", "inputs": {"a": float("inf"), "b": float("nan"), "operation": None}},
     "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
    {"1": {"class_type": "IntMath", "inputs": {"a": 10 ** 40, "b": [], "operation": ["add"]}},
     "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
    {"1": {"class_type": "PrimitiveFloat", "inputs": {"value": "nan"}},
     "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}},
    {"1": {"class_type": "PreviewAny", "inputs": {"source": ["1", -1]}}},
    {"1": {"class_type": "PreviewAny", "inputs": {"source": [True, 0]}}},
    {"": {"class_type": "PreviewAny", "inputs": {"source": ["", 0]}}},
]


@pytest.mark.parametrize("prompt", MALFORMED)
def test_malformed_prompts_give_structured_errors_never_exceptions(cat, prompt):
    result = validate_prompt(prompt, cat)
    if not result.ok:
        assert result.error["type"] in ("invalid_prompt", "prompt_no_outputs", "prompt_outputs_failed_validation")
        for entry in result.node_errors.values():
            assert entry["errors"] and all({"type", "message", "details", "extra_info"} <= set(e)
                                           for e in entry["errors"])


def test_nan_and_infinite_numbers_are_rejected(cat):
    prompt = {"1": node("PrimitiveFloat", value="nan"), "2": node("PreviewAny", source=["1", 0])}
    assert only_error(validate_prompt(prompt, cat), "1")["type"] == "invalid_input_type"
    prompt = {"1": node("PrimitiveInt", value=float("inf")), "2": node("PreviewAny", source=["1", 0])}
    assert only_error(validate_prompt(prompt, cat), "1")["type"] == "invalid_input_type"
