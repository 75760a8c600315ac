"""The small built-in utility nodes, run through the engine."""
import pytest
import torch

from nodes.image_basic import EmptyImage, ImageAdd, ImageInvert
from tests.conftest import Engine


def preview(engine, cls, **inputs):
    prompt = {"n": {"class_type": cls, "inputs": inputs},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}
    outcome, sink = engine.run(prompt)
    if outcome.status != "success":
        return outcome, sink.of("execution_error")[0]
    return outcome, outcome.outputs["out"]["text"][0]


@pytest.mark.parametrize("op,a,b,expected", [("add", 7, 3, "10"), ("subtract", 7, 3, "4"), ("multiply", 7, 3, "21"),
                                             ("divide", 7, 2, "3"), ("divide", -7, 2, "-4"), ("modulo", 7, 3, "1"),
                                             ("power", 2, 10, "1024"), ("min", 7, 3, "3"), ("max", 7, 3, "7")])
def test_int_math(engine, op, a, b, expected):
    assert preview(engine, "IntMath", a=a, b=b, operation=op)[1] == expected


def test_float_math_and_conversions(engine):
    assert preview(engine, "FloatMath", a=1.5, b=2.0, operation="multiply")[1] == "3.0"
    assert preview(engine, "FloatToInt", value=2.5, rounding="ceil")[1] == "3"
    assert preview(engine, "FloatToInt", value=-2.5, rounding="truncate")[1] == "-2"
    assert preview(engine, "IntToFloat", value=4)[1] == "4.0"


def test_division_by_zero_is_a_clear_node_error(engine):
    outcome, error = preview(engine, "IntMath", a=1, b=0, operation="divide")
    assert outcome.status == "error"
    assert error["node_id"] == "n" and "division by zero" in error["exception_message"]


def test_compare_and_logic(engine):
    prompt = {"a": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
              "b": {"class_type": "PrimitiveFloat", "inputs": {"value": 3.5}},
              "c": {"class_type": "Compare", "inputs": {"a": ["a", 0], "b": ["b", 0], "comparison": "<"}},
              "l": {"class_type": "BooleanLogic", "inputs": {"a": ["c", 0], "b": False, "operation": "xor"}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["l", 0]}}}
    assert engine.run(prompt)[0].outputs["out"] == {"text": ["true"]}


def test_strings(engine):
    assert preview(engine, "StringConcatenate", string_a="a", string_b="b", delimiter=", ")[1] == "a, b"
    assert preview(engine, "StringLength", string="héllo")[1] == "5"
    prompt = {"f": {"class_type": "PrimitiveFloat", "inputs": {"value": 3.14159}},
              "s": {"class_type": "NumberToString", "inputs": {"value": ["f", 0], "decimals": 2}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}}
    assert engine.run(prompt)[0].outputs["out"] == {"text": ["3.14"]}


def test_empty_image_invert_and_add():
    image = EmptyImage().run(None, width=4, height=3, batch_size=2, color=0xFF8000)[0]
    assert image.shape == (2, 3, 4, 3) and image.dtype == torch.float32
    assert torch.allclose(image[0, 0, 0], torch.tensor([1.0, 128 / 255, 0.0]))
    inverted = ImageInvert().run(None, image)[0]
    assert torch.allclose(inverted[1, 2, 3], torch.tensor([0.0, 127 / 255, 1.0]))
    total = ImageAdd().run(None, image, inverted)[0]
    assert torch.allclose(total, torch.ones_like(total))
    clamped = ImageAdd().run(None, image, image, clamp=True)[0]
    assert clamped.max() <= 1.0
    with pytest.raises(ValueError, match="same size"):
        ImageAdd().run(None, image, torch.zeros(1, 5, 5, 3))


def test_image_nodes_through_the_engine(engine):
    prompt = {"e": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
              "i": {"class_type": "ImageInvert", "inputs": {"image": ["e", 0]}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["i", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.outputs["out"]["text"][0].startswith("Tensor of shape [1, 8, 8, 3]")


def test_primitives(engine):
    assert preview(engine, "PrimitiveString", value="hi")[1] == "hi"
    assert preview(engine, "PrimitiveStringMultiline", value="a\nb")[1] == "a\nb"
    assert preview(engine, "PrimitiveBoolean", value=True)[1] == "true"
