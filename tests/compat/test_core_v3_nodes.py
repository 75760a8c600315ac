"""ComfyUI core nodes with V3 dynamic inputs, compiled into the built-in catalogue at start: ComfyMathExpression
(Autogrow a, b, c, ... of FLOAT or INT; a safe evaluator) and BatchImagesNode (Autogrow image0, image1, ...)."""
import uuid

import pytest
import torch

from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from model_management.services import Services
from nodes import builtin_catalogue
from nodes.math_expression import evaluate


@pytest.fixture
def engine(tmp_path):
    from compat.core_v3_nodes import add_core_v3_nodes
    services = Services.for_directory(str(tmp_path))
    catalogue = builtin_catalogue()
    add_core_v3_nodes(catalogue, services)
    executor = Executor(catalogue, services=services)

    def run(prompt):
        checked = validate_prompt(prompt, catalogue, None, services)
        if not checked.ok:
            return None, checked
        outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order),
                                        RecordingSink())
        return outcome, checked
    run.executor = executor
    return run


def math_prompt(expression, **values):
    prompt = {"m": {"class_type": "ComfyMathExpression", "inputs": {"expression": expression}},
              "f": {"class_type": "PreviewAny", "inputs": {"source": ["m", 0]}},
              "i": {"class_type": "PreviewAny", "inputs": {"source": ["m", 1]}}}
    for name, value in values.items():
        kind = "PrimitiveInt" if isinstance(value, int) else "PrimitiveFloat"
        prompt[f"v_{name}"] = {"class_type": kind, "inputs": {"value": value}}
        prompt["m"]["inputs"][f"values.{name}"] = [f"v_{name}", 0]
    return prompt


def test_expressions_over_named_inputs(engine):
    outcome, _ = engine(math_prompt("round(a / 8) * 8 + b ** 2 - values[0]", a=100.0, b=3))
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["f"]["text"] == ["5.0"] and outcome.outputs["i"]["text"] == ["5"]  # round(12.5) = 12
    outcome, _ = engine(math_prompt("a / 2 if a > 10 else -a", a=7.5))
    assert outcome.outputs["f"]["text"] == ["-7.5"] and outcome.outputs["i"]["text"] == ["-7"]


@pytest.mark.parametrize("expression,message", [
    ("a.__class__", "not allowed in an expression"),
    ("__import__('os').system('true')", "not allowed in an expression"),
    ("__import__('os')", "unknown function '__import__'"),
    ("open('/etc/passwd')", "unknown function 'open'"),
    ("[x for x in values]", "not allowed"),
    ("2 ** 99999999", "exponent 99999999 exceeds"),
    ("a / 0", "division by zero"),
    ("z + 1", "unknown name 'z'"),
    ("a > 1", "must evaluate to a numeric result"),
    ("", "Expression cannot be empty"),
])
def test_anything_else_is_a_clear_node_error(engine, expression, message):
    outcome, _ = engine(math_prompt(expression, a=4.0))
    assert outcome.status == "error" and message in outcome.error["exception_message"]


def test_the_evaluator_alone():
    assert evaluate("sum(a, b, 1) + max(values)", {"a": 1, "b": 2, "values": [1, 2]}) == 6
    assert evaluate("floor(sqrt(a)) % 3", {"a": 50}) == 1
    with pytest.raises(ValueError, match="invalid expression"):
        evaluate("a +", {"a": 1})


def test_batch_images_joins_any_number_at_the_first_size(engine):
    prompt = {"show": {"class_type": "PreviewImage", "inputs": {"images": ["batch", 0]}},
              "batch": {"class_type": "BatchImagesNode", "inputs": {}}}
    for index, (w, h, n) in enumerate([(16, 8, 2), (8, 8, 1), (32, 16, 3)]):
        prompt[f"img{index}"] = {"class_type": "EmptyImage", "inputs": {"width": w, "height": h, "batch_size": n,
                                                                        "color": 40 * index}}
        prompt["batch"]["inputs"][f"images.image{index}"] = [f"img{index}", 0]
    outcome, _ = engine(prompt)
    assert outcome.status == "success", outcome.error
    assert len(outcome.outputs["show"]["images"]) == 6


def test_the_catalogue_entry_is_the_v3_autogrow_form(engine):
    spec = engine.executor.catalogue.get("ComfyMathExpression")
    entry = spec.to_catalogue()
    assert entry["python_module"] == "comfy_extras.nodes_math" and entry["category"] == "logic"
    values = entry["input"]["required"]["values"]
    assert values[0] == "COMFY_AUTOGROW_V3" and values[1]["template"]["names"][:3] == ["a", "b", "c"]
    assert entry["output"] == ["FLOAT", "INT"]


def _resize_prompt(resize_type, image=("EmptyImage", {"width": 40, "height": 20, "batch_size": 1, "color": 0}),
                   **options):
    prompt = {"src": {"class_type": image[0], "inputs": dict(image[1])},
              "r": {"class_type": "ResizeImageMaskNode",
                    "inputs": {"input": ["src", 0], "resize_type": resize_type, "scale_method": "area",
                               **{f"resize_type.{k}": v for k, v in options.items()}}},
              "size": {"class_type": "GetImageSize", "inputs": {"image": ["r", 0]}},
              "w": {"class_type": "PreviewAny", "inputs": {"source": ["size", 0]}},
              "h": {"class_type": "PreviewAny", "inputs": {"source": ["size", 1]}}}
    return prompt


@pytest.mark.parametrize("resize_type,options,size", [
    ("scale dimensions", {"width": 16, "height": 0, "crop": "center"}, (16, 8)),
    ("scale dimensions", {"width": 30, "height": 30, "crop": "center"}, (30, 30)),
    ("scale by multiplier", {"multiplier": 0.55}, (22, 11)),
    ("scale longer dimension", {"longer_size": 10}, (10, 5)),
    ("scale shorter dimension", {"shorter_size": 10}, (20, 10)),
    ("scale width", {"width": 20}, (20, 10)),
    ("scale height", {"height": 5}, (10, 5)),
    ("scale total pixels", {"megapixels": 0.01}, (145, 72)),  # 10485 pixels at 2:1
    ("scale to multiple", {"multiple": 16}, (32, 16)),
])
def test_resize_modes_give_the_sizes(engine, resize_type, options, size):
    outcome, checked = engine(_resize_prompt(resize_type, **options))
    assert outcome is not None, checked.node_errors
    assert outcome.status == "success", outcome.error
    assert (int(outcome.outputs["w"]["text"][0]), int(outcome.outputs["h"]["text"][0])) == size


def test_resize_matches_another_input_and_takes_masks(engine):
    prompt = _resize_prompt("match size", crop="disabled")
    prompt["ref"] = {"class_type": "EmptyImage", "inputs": {"width": 12, "height": 9, "batch_size": 1, "color": 0}}
    prompt["r"]["inputs"]["resize_type.match"] = ["ref", 0]
    outcome, checked = engine(prompt)
    assert outcome is not None, checked.node_errors
    assert (outcome.outputs["w"]["text"][0], outcome.outputs["h"]["text"][0]) == ("12", "9")
    from nodes.resize_modes import resize
    mask = torch.ones(2, 20, 40)
    assert resize(mask, "scale longer dimension", {"longer_size": 8}, "bilinear").shape == (2, 4, 8)
    with pytest.raises(ValueError, match="unknown resize_type"):
        resize(mask, "sideways", {}, "area")


def _png_chunks(data):
    import struct
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks = 8, []
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        chunks.append((data[at + 4:at + 8], data[at + 8:at + 8 + length]))
        at += 12 + length
    return chunks


@pytest.mark.parametrize("depth", ["8-bit", "16-bit"])
def test_save_image_advanced_writes_png_at_the_bit_depth(engine, tmp_path, depth):
    import os
    import struct
    import zlib

    import numpy as np
    from PIL import Image
    prompt = {"img": {"class_type": "EmptyImage", "inputs": {"width": 6, "height": 4, "batch_size": 2,
                                                             "color": 0x336699}},
              "save": {"class_type": "SaveImageAdvanced", "inputs": {
                  "images": ["img", 0], "filename_prefix": "adv", "format": "png", "format.bit_depth": depth,
                  "format.input_color_space": "sRGB"}}}
    outcome, checked = engine(prompt)
    assert outcome is not None, checked.node_errors
    assert outcome.status == "success", outcome.error
    files = outcome.outputs["save"]["images"]
    assert len(files) == 2 and all(f["type"] == "output" for f in files)
    path = os.path.join(str(tmp_path), "output", files[0]["filename"])
    data = open(path, "rb").read()
    chunks = dict(_png_chunks(data))
    width, height, bits, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, bits, color) == (6, 4, 8 if depth == "8-bit" else 16, 2)
    assert Image.open(path).size == (6, 4)  # a valid PNG to other readers too
    if depth == "16-bit":
        raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(4, 1 + 6 * 3 * 2)
        assert not raw[:, 0].any()  # filter 0
        samples = raw[:, 1:].copy().view(">u2").reshape(4, 6, 3)
        expected = (np.array([0x33, 0x66, 0x99]) / 255.0 * 65535).astype(np.uint16)
        assert (np.abs(samples.astype(int) - expected).max()) <= 1
        assert b"prompt\x00" in chunks[b"tEXt"]
    assert files[0]["filename"] == "adv_00001.png"  # ComfyUI's naming for this node: no trailing underscore
    prompt["save"]["inputs"]["format"] = "tiff"
    _, checked = engine(prompt)
    assert not checked.ok  # a format the node does not offer is refused before running


def test_save_image_advanced_writes_exr_and_avif(engine, tmp_path):
    import json
    import os

    import numpy as np
    import OpenEXR
    from PIL import Image
    from nodes.exr_format import srgb_to_linear
    workflow = {"nodes": [{"id": 1}], "links": []}
    prompt = {"img": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 3,
                                                             "color": 0x336699}},
              "save": {"class_type": "SaveImageAdvanced", "inputs": {
                  "images": ["img", 0], "filename_prefix": "hdr/shot", "format": "exr",
                  "format.bit_depth": "32-bit float", "format.input_color_space": "sRGB"}}}
    outcome, checked = engine(prompt)
    assert outcome is not None, checked.node_errors
    assert outcome.status == "success", outcome.error
    files = outcome.outputs["save"]["images"]
    assert [f["filename"] for f in files] == ["shot_00001.exr", "shot_00002.exr", "shot_00003.exr"]
    assert {f["subfolder"] for f in files} == {"hdr"}
    exr = OpenEXR.File(os.path.join(str(tmp_path), "output", "hdr", files[2]["filename"]))
    expected = srgb_to_linear(np.array([0x33, 0x66, 0x99], dtype=np.float32) / 255)
    assert np.allclose(exr.channels()["RGB"].pixels, expected, rtol=1e-6)
    assert json.loads(exr.header()["prompt"])["save"]["class_type"] == "SaveImageAdvanced"

    prompt["save"]["inputs"] = {"images": ["img", 0], "filename_prefix": "anim", "format": "avif",
                                "format.bit_depth": "auto", "format.input_color_space": "sRGB", "format.crf": 18,
                                "format.save_mode": "animated", "format.save_mode.fps": 6.0,
                                "format.save_mode.loop_count": 0}
    outcome, checked = engine(prompt)
    assert outcome is not None, checked.node_errors
    assert outcome.status == "success", outcome.error
    ui = outcome.outputs["save"]
    assert [f["filename"] for f in ui["images"]] == ["anim_00001.avif"] and list(ui["animated"]) == [True]
    assert Image.open(os.path.join(str(tmp_path), "output", "anim_00001.avif")).n_frames == 3

    prompt["save"]["inputs"]["format.save_mode"] = "still images"
    del prompt["save"]["inputs"]["format.save_mode.fps"], prompt["save"]["inputs"]["format.save_mode.loop_count"]
    prompt["save"]["inputs"]["filename_prefix"] = "still_%batch_num%"
    outcome, checked = engine(prompt)
    assert outcome is not None, checked.node_errors
    names = [f["filename"] for f in outcome.outputs["save"]["images"]]
    assert names == ["still_0_00001.avif", "still_1_00002.avif", "still_2_00003.avif"]
    decoded = Image.open(os.path.join(str(tmp_path), "output", names[0]))
    assert decoded.getexif()[0x0110].startswith("prompt:")
    assert np.abs(np.asarray(decoded.convert("RGB"), dtype=float).mean((0, 1)) - (0x33, 0x66, 0x99)).max() < 6  # YUV 4:2:0, limited range

    prompt["save"]["inputs"]["format.crf"] = 99
    _, checked = engine(prompt)
    assert not checked.ok  # crf is 1..63
