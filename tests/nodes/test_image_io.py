"""SaveImage, PreviewImage, LoadImage and LoadImageMask, run through validation and the engine with real folders."""
import json
import os
import re
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from execution.events import RecordingSink
from execution.scheduler import Job
from model_management.services import Services
from graph.validation import validate_prompt
from nodes.declare import Socket, node as declare_node
from nodes.image_io import LoadImage, LoadImageMask
from tests.conftest import Engine


captured = {}  # node id -> the value a Capture node received


@declare_node(category="tests", output_node=True)
class Capture:
    """An output node that hands its input back to the test (and runs every time)."""
    value = Socket("*", tooltip="Anything.")

    def run(self, ctx, value):
        captured[ctx.node_id] = value
        return {"ui": {"n": [len(captured)]}, "result": ()}

    def fingerprint(self, ctx, **_):
        return float("nan")


class Env:
    """An engine whose executor and validation use folders under tmp_path."""

    def __init__(self, base):
        self.services = Services.for_directory(str(base))
        self.paths = self.services.paths
        self.engine = Engine()
        self.engine.executor.services = self.services

    def validate(self, prompt):
        return validate_prompt(prompt, self.engine.catalogue, None, self.services)

    def run(self, prompt, extra_data=None):
        result = self.validate(prompt)
        assert result.ok, (result.error, result.node_errors)
        job = Job(str(uuid.uuid4()), result.prompt, result.outputs, extra_data or {}, result.order)
        sink = RecordingSink()
        return self.engine.executor.execute_sync(job, sink), sink

    def output(self, prompt, node_id="out"):
        outcome, sink = self.run(prompt)
        assert outcome.status == "success", sink.of("execution_error")
        return outcome.outputs[node_id]

    def write_input(self, name, image, **save):
        path = os.path.join(self.paths.input_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, **save)
        return path


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def node(cls, **inputs):
    return {"class_type": cls, "inputs": inputs}


def load(env, name, cls="LoadImage", **inputs):
    """Run a loader and return its outputs (through the engine, validation included)."""
    prompt = {"l": node(cls, image=name, **inputs), "out": node("Capture", value=["l", 0])}
    if cls == "LoadImage":
        prompt["m"] = node("Capture", value=["l", 1])
    captured.clear()
    outcome, sink = env.run(prompt)
    assert outcome.status == "success", sink.of("execution_error")
    return [captured[k] for k in ("out", "m") if k in captured]


def empty_image(width, height, batch=1, color=0):
    return node("EmptyImage", width=width, height=height, batch_size=batch, color=color)


def random_rgb(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _add_capture(env):
    env.engine.catalogue.add(Capture.SPEC)


# -- SaveImage -----------------------------------------------------------------------------------------------

def test_save_image_writes_numbered_pngs_with_exact_pixels_and_metadata(env):
    pixels = random_rgb(6, 5)
    env.write_input("src.png", Image.fromarray(pixels))
    workflow = {"nodes": [{"id": 1, "type": "LoadImage"}], "links": [], "version": 0.4}
    prompt = {"l": node("LoadImage", image="src.png"),
              "s": node("SaveImage", images=["l", 0], filename_prefix="shot")}
    outcome, _ = env.run(prompt, extra_data={"extra_pnginfo": {"workflow": workflow, "note": "hi"}})
    assert outcome.status == "success"
    assert outcome.outputs["s"] == {"images": [{"filename": "shot_00001_.png", "subfolder": "", "type": "output"}]}
    with Image.open(os.path.join(env.paths.output_dir, "shot_00001_.png")) as saved:
        assert saved.mode == "RGB" and np.array_equal(np.asarray(saved), pixels)
        assert json.loads(saved.text["prompt"]) == env.validate(prompt).prompt
        assert json.loads(saved.text["workflow"]) == workflow
        assert json.loads(saved.text["note"]) == "hi"


def test_save_image_batch_counts_up_and_truncates(env):
    prompt = {"e": empty_image(4, 3, batch=3, color=0x8040FF),
              "s": node("SaveImage", images=["e", 0], filename_prefix="batch")}
    images = env.output(prompt, "s")["images"]
    assert [i["filename"] for i in images] == ["batch_00001_.png", "batch_00002_.png", "batch_00003_.png"]
    for entry in images:
        with Image.open(os.path.join(env.paths.output_dir, entry["filename"])) as saved:
            assert saved.size == (4, 3)
            assert saved.getpixel((0, 0)) == (0x80, 0x40, 0xFF)
            assert "workflow" not in saved.text and "prompt" in saved.text


def test_save_image_metadata_can_be_disabled(env):
    env.services.settings["disable_metadata"] = True
    prompt = {"e": empty_image(2, 2), "s": node("SaveImage", images=["e", 0], filename_prefix="plain")}
    outcome, _ = env.run(prompt, extra_data={"extra_pnginfo": {"workflow": {}}})
    with Image.open(os.path.join(env.paths.output_dir, outcome.outputs["s"]["images"][0]["filename"])) as saved:
        assert saved.text == {}


def test_save_image_subfolders_counters_and_placeholders(env):
    sub = os.path.join(env.paths.output_dir, "sub", "dir")
    os.makedirs(sub)
    Image.new("RGB", (1, 1)).save(os.path.join(sub, "name_00007_.png"))
    prompt = {"e": empty_image(8, 2), "s": node("SaveImage", images=["e", 0], filename_prefix="sub/dir/name")}
    assert env.output(prompt, "s")["images"] == [{"filename": "name_00008_.png", "subfolder": "sub/dir",
                                                 "type": "output"}]
    assert os.path.isfile(os.path.join(sub, "name_00008_.png"))
    prompt["s"]["inputs"]["filename_prefix"] = "size/img_%width%x%height%"
    assert env.output(prompt, "s")["images"][0] == {"filename": "img_8x2_00001_.png", "subfolder": "size",
                                                    "type": "output"}


@pytest.mark.parametrize("prefix", ["../escape", "a/../../escape", "/tmp/escape", ".."])
def test_save_image_refuses_prefixes_outside_the_output_folder(env, tmp_path, prefix):
    prompt = {"e": empty_image(2, 2), "s": node("SaveImage", images=["e", 0], filename_prefix=prefix)}
    outcome, sink = env.run(prompt)
    assert outcome.status == "error"
    error = sink.of("execution_error")[0]
    assert error["node_id"] == "s" and "filename_prefix" in error["exception_message"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("escape")]


def test_save_image_symlinked_subfolder_cannot_escape(env, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, os.path.join(env.paths.output_dir, "link"))
    prompt = {"e": empty_image(2, 2), "s": node("SaveImage", images=["e", 0], filename_prefix="link/x")}
    outcome, _ = env.run(prompt)
    assert outcome.status == "error" and not os.listdir(outside)


def test_preview_image_goes_to_temp(env):
    prompt = {"e": empty_image(3, 3, batch=2, color=0xFFFFFF), "p": node("PreviewImage", images=["e", 0])}
    images = env.output(prompt, "p")["images"]
    assert len(images) == 2 and {i["type"] for i in images} == {"temp"} and images[0]["subfolder"] == ""
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", images[0]["filename"])
    assert images[1]["filename"] == images[0]["filename"].replace("00001", "00002")
    with Image.open(os.path.join(env.paths.temp_dir, images[0]["filename"])) as saved:
        assert saved.getpixel((1, 1)) == (255, 255, 255) and "prompt" in saved.text
    assert os.listdir(env.paths.output_dir) == []


def test_mask_preview_saves_masks_as_grey_images_in_temp(env):
    prompt = {"m": node("SolidMask", value=0.5, width=4, height=3), "p": node("MaskPreview", mask=["m", 0])}
    images = env.output(prompt, "p")["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"
    assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", images[0]["filename"])
    with Image.open(os.path.join(env.paths.temp_dir, images[0]["filename"])) as saved:
        assert saved.size == (4, 3) and saved.mode == "RGB"
        assert saved.getpixel((2, 1)) == (127, 127, 127)  # 0.5 * 255 truncated, as SaveImage writes it
    assert os.listdir(env.paths.output_dir) == []


# -- LoadImage -----------------------------------------------------------------------------------------------

def test_load_rgb(env):
    pixels = random_rgb(5, 7)
    env.write_input("rgb.png", Image.fromarray(pixels))
    image, mask = load(env, "rgb.png")
    assert image.shape == (1, 5, 7, 3) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(pixels.astype(np.float32) / 255.0))
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.float32 and not mask.any()


def test_load_rgba_mask_is_one_minus_alpha(env):
    pixels = random_rgb(4, 6, channels=4, seed=1)
    env.write_input("rgba.png", Image.fromarray(pixels))
    image, mask = load(env, "rgba.png")
    assert image.shape == (1, 4, 6, 3)
    assert torch.allclose(image[0], torch.from_numpy(pixels[..., :3] / 255.0).float())
    assert mask.shape == (1, 4, 6)
    assert torch.allclose(mask[0], torch.from_numpy(1.0 - pixels[..., 3] / 255.0).float())


def test_load_palette_with_transparency(env):
    indices = np.array([[0, 1, 1], [1, 0, 1]], dtype=np.uint8)
    pal = Image.new("P", (3, 2))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putdata(indices.flatten().tolist())
    env.write_input("pal.png", pal, transparency=0)
    image, mask = load(env, "pal.png")
    assert image.shape == (1, 2, 3, 3)
    assert image[0, 0, 1].tolist() == [0.0, 0.0, 1.0]
    assert mask.shape == (1, 2, 3) and mask[0].tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_load_16_bit_greyscale_keeps_its_range(env):
    values = np.array([[0, 257, 1000], [32768, 65000, 65535]], dtype=np.uint16)
    env.write_input("deep.png", Image.fromarray(values))
    image, mask = load(env, "deep.png")
    assert image.shape == (1, 2, 3, 3)
    expected = torch.from_numpy(values.astype(np.float32) / 65535.0)
    for c in range(3):
        assert torch.allclose(image[0, ..., c], expected)
    assert image.max() == 1.0 and mask.shape == (1, 64, 64)
    (as_mask,) = load(env, "deep.png", cls="LoadImageMask", channel="green")
    assert torch.allclose(as_mask[0], expected)


def test_load_honours_exif_orientation(env):
    pixels = random_rgb(2, 4, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    env.write_input("phone.png", Image.fromarray(pixels), exif=exif)
    image, _ = load(env, "phone.png")
    assert image.shape == (1, 4, 2, 3)
    assert torch.equal(image[0], torch.from_numpy(np.rot90(pixels, k=-1).astype(np.float32) / 255.0))


def test_load_animated_gif_is_a_batch(env):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (5, 3), c) for c in colours]
    env.write_input("anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=40)
    image, mask = load(env, "anim.gif")
    assert image.shape == (3, 3, 5, 3)
    assert [image[i, 1, 2].tolist() for i in range(3)] == [[c / 255 for c in col] for col in colours]
    assert mask.shape == (3, 64, 64)


def test_load_animated_png_with_alpha(env):
    frames = [Image.new("RGBA", (4, 4), (10 * i, 0, 0, 255 - 100 * i)) for i in range(3)]
    env.write_input("anim.png", frames[0], save_all=True, append_images=frames[1:])
    image, mask = load(env, "anim.png")
    assert image.shape == (3, 4, 4, 3) and mask.shape == (3, 4, 4)
    assert [round(float(mask[i, 0, 0]) * 255) for i in range(3)] == [0, 100, 200]
    assert round(float(image[2, 0, 0, 0]) * 255) == 20


def test_load_multipage_tiff_keeps_pages_of_the_first_size(env):
    pages = [Image.new("RGB", (6, 4), (1, 2, 3)), Image.new("RGB", (3, 3), (9, 9, 9)),
             Image.new("RGB", (6, 4), (200, 100, 50))]
    env.write_input("pages.tiff", pages[0], save_all=True, append_images=pages[1:])
    image, _ = load(env, "pages.tiff")
    assert image.shape == (2, 4, 6, 3)
    assert round(float(image[1, 0, 0, 0]) * 255) == 200


def test_load_annotated_names_from_other_folders(env):
    Image.new("RGB", (3, 2), (0, 255, 0)).save(os.path.join(env.paths.output_dir, "made.png"))
    Image.new("RGB", (2, 2), (255, 0, 0)).save(os.path.join(env.paths.temp_dir, "tmp.png"))
    image, _ = load(env, "made.png [output]")
    assert image.shape == (1, 2, 3, 3) and image[0, 0, 0].tolist() == [0.0, 1.0, 0.0]
    image, _ = load(env, "tmp.png [temp]")
    assert image[0, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_load_image_choices_list_the_input_folder_fresh(env):
    def choices():
        return env.engine.catalogue.get("LoadImage").to_catalogue(env.services)["input"]["required"]["image"]

    assert choices() == [[], {"image_upload": True, "tooltip": choices()[1]["tooltip"]}]
    env.write_input("b.png", Image.new("RGB", (1, 1)))
    env.write_input("a.jpg", Image.new("RGB", (1, 1)))
    env.write_input("notes.txt", Image.new("RGB", (1, 1)), format="PNG")
    assert choices()[0] == ["a.jpg", "b.png"]


# -- LoadImageMask -------------------------------------------------------------------------------------------

def test_load_image_mask_channels(env):
    pixels = random_rgb(3, 4, channels=4, seed=3)
    env.write_input("m.png", Image.fromarray(pixels))
    for index, channel in enumerate(["red", "green", "blue"]):
        (mask,) = load(env, "m.png", cls="LoadImageMask", channel=channel)
        assert mask.shape == (1, 3, 4) and mask.dtype == torch.float32
        assert torch.allclose(mask[0], torch.from_numpy(pixels[..., index] / 255.0).float())
    (mask,) = load(env, "m.png", cls="LoadImageMask", channel="alpha")
    assert torch.allclose(mask[0], torch.from_numpy(1.0 - pixels[..., 3] / 255.0).float())


def test_load_image_mask_without_alpha_is_empty(env):
    env.write_input("opaque.jpg", Image.new("RGB", (8, 8), (200, 10, 10)))
    (mask,) = load(env, "opaque.jpg", cls="LoadImageMask", channel="alpha")
    assert mask.shape == (1, 64, 64) and not mask.any()
    (mask,) = load(env, "opaque.jpg", cls="LoadImageMask", channel="red")
    assert mask.shape == (1, 8, 8) and float(mask.min()) > 0.7


def test_load_image_mask_channel_is_still_list_checked(env):
    env.write_input("m.png", Image.new("RGB", (2, 2)))
    result = env.validate({"l": node("LoadImageMask", image="m.png", channel="purple"),
                           "out": node("Capture", value=["l", 0])})
    assert result.node_errors["l"]["errors"][0]["type"] == "value_not_in_list"


# -- fingerprints and caching --------------------------------------------------------------------------------

def test_fingerprint_follows_file_content(env):
    path = env.write_input("f.png", Image.new("RGB", (2, 2), (1, 2, 3)))
    ctx = SimpleNamespace(services=env.services)
    for spec, extra in ((LoadImage.SPEC, {}), (LoadImageMask.SPEC, {"channel": "red"})):
        first = spec.fingerprint(ctx, {"image": "f.png", **extra})
        assert first == spec.fingerprint(ctx, {"image": "f.png", **extra})
        Image.new("RGB", (2, 2), (4, 5, 6)).save(path)
        second = spec.fingerprint(ctx, {"image": "f.png", **extra})
        assert second != first and len(second) == 64
        Image.new("RGB", (2, 2), (1, 2, 3)).save(path)


def test_engine_reruns_load_image_when_the_file_changes(env):
    path = env.write_input("live.png", Image.new("RGB", (2, 2), (0, 0, 0)))
    prompt = {"l": node("LoadImage", image="live.png"), "s": node("SaveImage", images=["l", 0],
                                                                    filename_prefix="live")}
    first, _ = env.run(prompt)
    assert "l" in first.executed
    again, _ = env.run(prompt)
    assert "l" not in again.executed and "l" in again.cached
    Image.new("RGB", (2, 2), (255, 255, 255)).save(path)
    changed, _ = env.run(prompt)
    assert "l" in changed.executed and "s" in changed.executed
    newest = changed.outputs["s"]["images"][0]["filename"]
    with Image.open(os.path.join(env.paths.output_dir, newest)) as saved:
        assert saved.getpixel((0, 0)) == (255, 255, 255)


# -- validation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", ["LoadImage", "LoadImageMask"])
@pytest.mark.parametrize("name", ["missing.png", "../outside.png", "/etc/passwd", "x.png [output]", ""])
def test_validation_reports_bad_image_names(env, tmp_path, cls, name):
    Image.new("RGB", (1, 1)).save(tmp_path / "outside.png")  # exists, but outside the input folder
    env.write_input("x.png", Image.new("RGB", (1, 1)))  # in input/, not in output/
    inputs = {"image": name} if cls == "LoadImage" else {"image": name, "channel": "red"}
    result = env.validate({"l": node(cls, **inputs), "out": node("Capture", value=["l", 0])})
    assert not result.ok and result.error["type"] == "prompt_outputs_failed_validation"
    error = result.node_errors["l"]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert f"Invalid image file: {name}" in error["details"]
    assert error["extra_info"]["input_name"] == "image"


def test_validation_accepts_names_outside_the_listing(env):
    Image.new("RGB", (1, 1)).save(os.path.join(env.paths.output_dir, "o.png"))
    env.write_input("deep/in.png", Image.new("RGB", (1, 1)))
    for name in ("o.png [output]", "deep/in.png"):
        assert env.validate({"l": node("LoadImage", image=name), "out": node("Capture", value=["l", 0])}).ok


def test_validate_hook_never_raises(env):
    spec = LoadImage.SPEC
    for bad in ("../../x.png", "a\x00b.png", 5, None):
        assert spec.validate("l", {"image": bad}, {}, env.services) == f"Invalid image file: {bad}"
    env.write_input("ok.png", Image.new("RGB", (1, 1)))
    assert spec.validate("l", {"image": "ok.png"}, {}, env.services) is True


def test_image_compare_keeps_both_images_as_previews(tmp_path):
    from tests.nodes.test_model_nodes import ModelEngine
    engine = ModelEngine(tmp_path)
    prompt = {"a": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 2, "color": 0}},
              "b": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": 1, "color": 255}},
              "cmp": {"class_type": "ImageCompare", "inputs": {"image_a": ["a", 0], "image_b": ["b", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    ui = outcome.outputs["cmp"]
    assert len(ui["a_images"]) == 2 and len(ui["b_images"]) == 1
    assert all(i["type"] == "temp" and i["filename"].startswith("comfy.compare.a_temp_") for i in ui["a_images"])
    assert os.path.isfile(os.path.join(engine.services.paths.temp_dir, ui["b_images"][0]["filename"]))
    outcome, _ = engine.run({"b": prompt["b"], "cmp": {"class_type": "ImageCompare", "inputs": {"image_b": ["b", 0]}}})
    assert outcome.status == "success" and outcome.outputs["cmp"]["a_images"] == []
