"""Mask nodes on small synthetic masks, plus the interface and documentation checks for every image/mask
toolbox node (nodes/image_batch.py, image_filters.py, image_composite.py, masks.py)."""
import json

import numpy as np
import pytest
import torch

from nodes import image_batch, image_composite, image_filters, masks
from nodes.masks import (CropMask, FeatherMask, GrowMask, ImageColorToMask, ImageToMask, InvertMask, MaskComposite,
                         MaskToImage, SolidMask, ThresholdMask)

from tests.reference import REFERENCE  # a copy of ../shared/nodes-reference.json
TOOLBOX = [cls for module in (image_batch, image_filters, image_composite, masks) for cls in module.NODES]
EXPECTED_NAMES = {"ImageBatch", "RepeatImageBatch", "ImageFromBatch", "RebatchImages", "ImageBlend", "ImageSharpen",
                  "ImageBlur", "ImageQuantize", "ImageCrop", "ImageCompositeMasked", "ImagePadForOutpaint",
                  "MaskToImage", "ImageToMask", "ImageColorToMask", "SolidMask", "InvertMask", "CropMask",
                  "MaskComposite", "FeatherMask", "GrowMask", "ThresholdMask"}


def _reference():
    with open(REFERENCE, encoding="utf-8") as f:
        return json.load(f)


def _normalise(entry):
    """A catalogue input without tooltips; combos in the reference's ["COMBO", {options}] form (a default equal
    to the first choice is what the reference leaves implicit)."""
    head, opts = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    opts.pop("tooltip", None)
    if isinstance(head, list):
        if opts.get("default") == head[0]:
            opts.pop("default")
        opts = {"multiselect": False, "options": head, **opts}
        head = "COMBO"
    return [head, opts] if opts else [head]


def test_the_toolbox_is_complete():
    assert {cls.SPEC.name for cls in TOOLBOX} == EXPECTED_NAMES


@pytest.mark.parametrize("cls", TOOLBOX, ids=lambda cls: cls.SPEC.name)
def test_interface_matches_the_reference(cls):
    ref = _reference()[cls.SPEC.name]
    entry = cls.SPEC.to_catalogue()
    assert entry["display_name"] == (ref["display_name"] or cls.SPEC.name)
    for key in ("category", "input_order", "output", "output_name", "output_is_list", "output_node"):
        assert entry[key] == ref[key], key
    assert entry["deprecated"] == ref.get("deprecated", False)
    assert set(entry["input"]) == set(ref["input"])
    for section, inputs in ref["input"].items():
        assert list(entry["input"][section]) == list(inputs)
        for name, expected in inputs.items():
            assert _normalise(entry["input"][section][name]) == expected, (section, name)


@pytest.mark.parametrize("cls", TOOLBOX, ids=lambda cls: cls.SPEC.name)
def test_every_node_is_documented(cls):
    spec = cls.SPEC
    assert len(spec.description) > 20
    for item in spec.inputs:
        assert len(item.options.get("tooltip", "")) > 5, item.name
    for output in spec.outputs:
        assert output.tooltip and len(output.tooltip) > 5, output.name


def test_mask_to_image_and_back():
    mask = torch.tensor([[0.0, 0.25], [0.5, 1.0]])  # an unbatched [H, W] mask
    image = MaskToImage().run(None, mask)[0]
    assert image.shape == (1, 2, 2, 3) and image.dtype == torch.float32
    for c in range(3):
        assert torch.equal(image[0, ..., c], mask)
    rgba = torch.rand(2, 3, 4, 4)
    for index, channel in enumerate(["red", "green", "blue", "alpha"]):
        assert torch.equal(ImageToMask().run(None, rgba, channel)[0], rgba[..., index])
    with pytest.raises(ValueError, match="3 channel.*no alpha channel.*MASK output"):
        ImageToMask().run(None, rgba[..., :3], "alpha")


def test_image_color_to_mask_selects_the_exact_8_bit_colour():
    image = torch.zeros(1, 2, 3, 3)
    image[0, 0, 1] = torch.tensor([0x12, 0x34, 0x56]) / 255.0
    image[0, 1, 2] = torch.tensor([0x12, 0x34, 0x57]) / 255.0  # one step off in blue
    mask = ImageColorToMask().run(None, image, 0x123456)[0]
    assert torch.equal(mask, torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]))
    black = ImageColorToMask().run(None, image, 0)[0]
    assert black.sum() == 4


def test_solid_invert_threshold():
    solid = SolidMask().run(None, 0.25, 5, 3)[0]
    assert solid.shape == (1, 3, 5) and torch.all(solid == 0.25)
    assert torch.all(InvertMask().run(None, solid)[0] == 0.75)
    ramp = torch.tensor([[[0.1, 0.5, 0.51, 0.9]]])
    assert torch.equal(ThresholdMask().run(None, ramp, 0.5)[0], torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]))


def test_crop_mask_and_its_errors():
    mask = torch.arange(30, dtype=torch.float32).view(1, 5, 6)
    crop = CropMask().run(None, mask, 1, 2, 3, 2)[0]
    assert torch.equal(crop, torch.tensor([[[13.0, 14.0, 15.0], [19.0, 20.0, 21.0]]]))
    edge = CropMask().run(None, mask, 4, 3, 512, 512)[0]  # runs past the edge: stops there
    assert torch.equal(edge, torch.tensor([[[22.0, 23.0], [28.0, 29.0]]]))
    with pytest.raises(ValueError, match=r"mask is 6x5 but x=6, y=0 lies outside it"):
        CropMask().run(None, mask, 6, 0, 2, 2)


@pytest.mark.parametrize("operation,expected", [
    ("multiply", lambda d, s: d * s), ("add", lambda d, s: min(d + s, 1.0)), ("subtract", lambda d, s: max(d - s, 0.0)),
    ("and", lambda d, s: float(d > 0.5 and s > 0.5)), ("or", lambda d, s: float(d > 0.5 or s > 0.5)),
    ("xor", lambda d, s: float((d > 0.5) != (s > 0.5)))])
def test_mask_composite_operations(operation, expected):
    rng = np.random.default_rng(3)
    dst = rng.choice([0.0, 0.3, 0.6, 1.0], size=(4, 5)).astype(np.float32)
    src = rng.choice([0.0, 0.2, 0.7, 1.0], size=(3, 3)).astype(np.float32)
    out = MaskComposite().run(None, torch.from_numpy(dst), torch.from_numpy(src), 3, 2, operation)[0]
    want = dst.copy()
    for r in range(2, 4):  # the 2 x 2 overlap: source rows 0..1, columns 0..1
        for c in range(3, 5):
            want[r, c] = expected(float(dst[r, c]), float(src[r - 2, c - 3]))
    assert out.shape == (1, 4, 5)
    assert np.allclose(out[0].numpy(), want)


def test_mask_composite_batches_and_errors():
    dst = torch.zeros(3, 4, 4)
    src = torch.ones(1, 2, 2)
    out = MaskComposite().run(None, dst, src, 0, 0, "add")[0]
    assert out.shape == (3, 4, 4) and torch.all(out[:, :2, :2] == 1) and out.sum() == 12
    with pytest.raises(ValueError, match=r"destination is 4x4 but source is 2x2 and x=600, y=0 lies outside it"):
        MaskComposite().run(None, dst, src, 600, 0, "add")
    with pytest.raises(ValueError, match="batch of 3 masks and source of 2"):
        MaskComposite().run(None, dst, torch.ones(2, 2, 2), 0, 0, "add")
    with pytest.raises(ValueError, match="source must be a MASK"):
        MaskComposite().run(None, dst, torch.ones(1, 2, 2, 2), 0, 0, "add")


def test_feather_mask_linear_ramps():
    mask = torch.ones(1, 4, 6)
    out = FeatherMask().run(None, mask, 3, 0, 2, 1)[0]
    # left 3: (k + 1) / 3 for columns 0..2; right 2: 1/2 at the edge column, 2/2 next to it; bottom 1: 1/1
    columns = [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 0.5]
    assert np.allclose(out[0].numpy(), np.tile(columns, (4, 1)))
    both = FeatherMask().run(None, torch.ones(3, 3), 0, 2, 0, 2)[0]  # overlapping top and bottom ramps multiply
    assert np.allclose(both[0, :, 0].numpy(), [0.5 * 1.0, 1.0 * 1.0, 1.0 * 0.5])
    huge = FeatherMask().run(None, torch.ones(1, 1, 4), 100, 0, 0, 0)[0]  # clamped to the width
    assert np.allclose(huge[0, 0].numpy(), [0.25, 0.5, 0.75, 1.0])


def _dilate_reference(mask, steps, tapered):
    """Grey dilation by repeated 3x3 (square or cross) maxima, ignoring pixels outside the mask."""
    out = mask.copy()
    for _ in range(abs(steps)):
        prev, out = out, out.copy()
        h, w = prev.shape
        for r in range(h):
            for c in range(w):
                values = []
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        if tapered and dr and dc:
                            continue
                        if 0 <= r + dr < h and 0 <= c + dc < w:
                            values.append(prev[r + dr, c + dc] if steps > 0 else -prev[r + dr, c + dc])
                out[r, c] = max(values) if steps > 0 else -max(values)
    return out


@pytest.mark.parametrize("expand", [2, -1, 3])
@pytest.mark.parametrize("tapered", [True, False])
def test_grow_mask_matches_a_reference_dilation(expand, tapered):
    rng = np.random.default_rng(abs(expand) + 10 * tapered)
    mask = (rng.random((9, 10)) > 0.75).astype(np.float32) * rng.choice([0.5, 1.0], size=(9, 10)).astype(np.float32)
    if expand < 0:
        mask = np.ones((9, 10), np.float32)
        mask[0, 0] = mask[4, 5] = 0.0
        mask[8, 2] = 0.5
    out = GrowMask().run(None, torch.from_numpy(mask), expand, tapered)[0]
    assert out.shape == (1, 9, 10)
    assert np.allclose(out[0].numpy(), _dilate_reference(mask, expand, tapered))


def test_grow_mask_shapes():
    dot = torch.zeros(1, 9, 9)
    dot[0, 4, 4] = 1.0
    diamond = GrowMask().run(None, dot, 2, True)[0][0]
    square = GrowMask().run(None, dot, 2, False)[0][0]
    r, c = np.mgrid[0:9, 0:9]
    assert np.array_equal(diamond.numpy(), ((abs(r - 4) + abs(c - 4)) <= 2).astype(np.float32))
    assert np.array_equal(square.numpy(), ((abs(r - 4) <= 2) & (abs(c - 4) <= 2)).astype(np.float32))
    assert torch.equal(GrowMask().run(None, square, -2, False)[0][0], dot[0])
    assert torch.equal(GrowMask().run(None, dot, 0, True)[0], dot)
    whole = GrowMask().run(None, dot, 16384, True)[0]  # capped work, same answer as growing until it fills
    assert torch.all(whole == 1.0)
