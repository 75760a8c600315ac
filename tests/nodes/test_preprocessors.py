"""Canny and the threshold line-art node: edge positions on synthetic shapes, threshold and hysteresis behaviour."""
import json

import pytest
import torch

from nodes.preprocessors import Canny, ImageToLineArt, canny

from tests.reference import REFERENCE  # a copy of ../shared/nodes-reference.json


def _square(h=32, w=40, box=(8, 20, 10, 30), value=1.0):
    image = torch.zeros(1, h, w, 3)
    top, bottom, left, right = box
    image[:, top:bottom, left:right] = value
    return image


def _edges(image, low=0.4, high=0.8):
    out = Canny().run(None, image, low, high)[0]
    assert out.shape == image.shape[:3] + (3,) and out.dtype == torch.float32
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    return out[0, ..., 0].bool()


def test_interface_matches_the_reference():
    with open(REFERENCE, encoding="utf-8") as f:
        ref = json.load(f)["Canny"]
    entry = Canny.SPEC.to_catalogue()
    for key in ("category", "input_order", "output", "output_name", "output_is_list", "output_node"):
        assert entry[key] == ref[key], key
    for name, expected in ref["input"]["required"].items():
        got = entry["input"]["required"][name]
        opts = {k: v for k, v in (got[1] if len(got) > 1 else {}).items() if k != "tooltip"}
        assert ([got[0], opts] if opts else [got[0]]) == expected, name


@pytest.mark.parametrize("cls", [Canny, ImageToLineArt])
def test_documented(cls):
    assert len(cls.SPEC.description) > 20
    assert all(len(i.options.get("tooltip", "")) > 5 for i in cls.SPEC.inputs)
    assert all(o.tooltip for o in cls.SPEC.outputs)
    assert cls.SPEC.category == "image/preprocessors"


def test_canny_finds_exactly_the_square_outline():
    top, bottom, left, right = 8, 20, 10, 30
    edges = _edges(_square(box=(top, bottom, left, right)))
    # the boundary band: pixels at most one step from the square's border, on either side
    band = torch.zeros_like(edges)
    band[top - 1:bottom + 1, left - 1:right + 1] = True
    band[top + 1:bottom - 1, left + 1:right - 1] = False
    assert edges.any()
    assert not (edges & ~band).any(), "edge pixels away from the square's border"
    # along each side (away from the corners' blur) the line is exactly one pixel thick and unbroken
    for r in range(top + 3, bottom - 3):
        assert edges[r, left - 1:left + 1].sum() == 1, r
        assert edges[r, right - 1:right + 1].sum() == 1, r
    for c in range(left + 3, right - 3):
        assert edges[top - 1:top + 1, c].sum() == 1, c
        assert edges[bottom - 1:bottom + 1, c].sum() == 1, c


def test_flat_images_have_no_edges():
    for value in (0.0, 0.5, 1.0):
        assert not _edges(torch.full((1, 16, 16, 3), value)).any()


def test_thresholds_matter():
    dim = _square(value=0.1)  # a low-contrast square: gradient magnitude about 0.3
    assert not _edges(dim, 0.4, 0.8).any()
    assert _edges(dim, 0.1, 0.2).any()
    bright = _square(value=1.0)
    assert _edges(bright, 0.4, 0.8).sum() == _edges(bright, 0.1, 0.2).sum()  # thin outline whatever the levels


def test_hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones():
    image = torch.zeros(1, 40, 48, 3)
    ramp = torch.linspace(1.0, 0.1, 30)  # a bar whose contrast fades from strong to weak along its length
    image[:, 8:20, 8:38] = ramp.view(1, 1, 30, 1)
    image[:, 28:34, 8:14] = 0.1  # an isolated weak square
    strict = _edges(image, 0.79, 0.8)
    linked = _edges(image, 0.1, 0.8)
    assert strict[:24].any()
    assert linked[:24].sum() > strict[:24].sum() + 20  # the weak end of the bar joined through the strong end
    assert not linked[24:].any()  # the weak square touches no strong edge
    assert _edges(image, 0.1, 0.2)[24:].any()


def test_canny_accepts_gray_and_rgba_and_batches():
    square = _square()
    rgba = torch.cat([square, torch.ones(1, 32, 40, 1)], dim=-1)
    gray = square[..., :1]
    ref = canny(square, 0.4, 0.8)
    assert torch.equal(canny(rgba, 0.4, 0.8), ref) and torch.equal(canny(gray, 0.4, 0.8), ref)
    batch = torch.cat([square, torch.zeros_like(square)])
    out = Canny().run(None, batch, 0.4, 0.8)[0]
    assert out[0].any() and not out[1].any()


def test_canny_rejects_bad_input():
    with pytest.raises(ValueError, match="low_threshold"):
        Canny().run(None, _square(), 0.9, 0.2)
    with pytest.raises(ValueError, match="image"):
        Canny().run(None, torch.zeros(32, 40, 3), 0.4, 0.8)


def test_line_art_threshold_and_invert():
    drawing = torch.ones(1, 8, 8, 3)  # white paper
    drawing[:, 3, :] = 0.0  # a black line
    drawing[:, 6, :] = 0.7  # a faint pencil line
    out = ImageToLineArt().run(None, drawing, 0.5, True)[0]
    assert out.shape == (1, 8, 8, 3) and set(out.unique().tolist()) == {0.0, 1.0}
    assert out[0, 3].eq(1.0).all() and out[0, 0].eq(0.0).all() and out[0, 6].eq(0.0).all()
    faint = ImageToLineArt().run(None, drawing, 0.2, True)[0]
    assert faint[0, 6].eq(1.0).all()  # a lower threshold keeps the faint line
    light_lines = ImageToLineArt().run(None, 1.0 - drawing, 0.5, False)[0]
    assert torch.equal(light_lines, out)
    with pytest.raises(ValueError, match="threshold"):
        ImageToLineArt().run(None, drawing, 1.5, True)
