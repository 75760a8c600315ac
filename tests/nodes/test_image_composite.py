"""ImageCrop, ImageCompositeMasked and ImagePadForOutpaint with exact expected pixels, and an outpainting graph
run through the real scheduler into SaveImage."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from model_management.services import Services
from nodes.image_composite import ImageCompositeMasked, ImageCrop, ImagePadForOutpaint
from tests.conftest import Engine


def numbered(batch, height, width, channels=3):
    """Pixel (b, y, x, c) holds b * 1000 + y * 100 + x * 10 + c: every crop/paste position is visible."""
    b, y, x, c = np.meshgrid(range(batch), range(height), range(width), range(channels), indexing="ij")
    return torch.from_numpy((b * 1000 + y * 100 + x * 10 + c).astype(np.float32))


def test_image_crop_exact_pixels():
    image = numbered(2, 5, 6)
    out = ImageCrop().run(None, image, 3, 2, 1, 2)[0]
    assert out.shape == (2, 2, 3, 3)
    assert torch.equal(out, image[:, 2:4, 1:4, :])
    assert float(out[1, 0, 0, 2]) == 1000 + 200 + 10 + 2
    edge = ImageCrop().run(None, image, 512, 512, 4, 3)[0]  # runs past the edge: what is inside
    assert edge.shape == (2, 2, 2, 3) and torch.equal(edge, image[:, 3:, 4:, :])


def test_image_crop_corner_past_the_edge_moves_to_the_last_pixel_as_in_the_reference():
    image = numbered(1, 5, 6)
    assert torch.equal(ImageCrop().run(None, image, 2, 2, 6, 0)[0], image[:, 0:2, 5:6])
    assert torch.equal(ImageCrop().run(None, image, 2, 2, 0, 9)[0], image[:, 4:5, 0:2])


def test_composite_without_mask_pastes_and_cuts_at_the_edge():
    destination = torch.zeros(1, 4, 5, 3)
    source = numbered(1, 3, 3) + 1.0
    out = ImageCompositeMasked().run(None, destination, source, 3, 2, False)[0]
    want = np.zeros((4, 5, 3), np.float32)
    want[2:4, 3:5] = source[0, :2, :2].numpy()
    assert out.shape == (1, 4, 5, 3) and np.array_equal(out[0].numpy(), want)
    assert torch.all(destination == 0)  # the input is not modified


def test_composite_with_mask_blends_per_pixel():
    destination = torch.full((1, 3, 3, 3), 0.2)
    source = torch.full((1, 2, 2, 3), 0.8)
    mask = torch.tensor([[1.0, 0.5], [0.0, 0.25]])
    out = ImageCompositeMasked().run(None, destination, source, 1, 0, False, mask)[0]
    want = np.full((3, 3), 0.2, np.float32)
    for (r, c), m in np.ndenumerate(mask.numpy()):
        want[r, c + 1] = m * 0.8 + (1 - m) * 0.2
    for channel in range(3):
        assert np.allclose(out[0, ..., channel].numpy(), want)


def test_composite_resizes_mask_and_source_and_repeats_batches():
    destination = torch.zeros(3, 4, 4, 3)
    source = torch.ones(1, 2, 2, 3)
    # a 1x2 mask, left 0 right 1, stretched bilinearly to the 2x2 source is already exact: columns 0 and 1
    out = ImageCompositeMasked().run(None, destination, source, 0, 0, False, torch.tensor([[[0.0, 1.0]]]))[0]
    assert out.shape == (3, 4, 4, 3)
    assert torch.all(out[:, :2, 1] == 1.0) and torch.all(out[:, :2, 0] == 0.0) and out[:, 2:].sum() == 0
    # resize_source: a 2x2 source stretched over the whole 4x4 destination
    whole = ImageCompositeMasked().run(None, destination, source, 0, 0, True)[0]
    assert torch.all(whole == 1.0)
    # an RGBA source into an RGB destination drops its alpha
    rgba = torch.ones(1, 2, 2, 4)
    assert ImageCompositeMasked().run(None, destination, rgba, 0, 0, False)[0].shape == (3, 4, 4, 3)


def test_composite_outside_the_destination_pastes_nothing_and_bad_sources_are_clear_errors():
    destination = torch.rand(1, 32, 32, 3)
    out = ImageCompositeMasked().run(None, destination, torch.zeros(1, 8, 8, 3), 600, 0, False)[0]
    assert torch.equal(out, destination) and out is not destination
    with pytest.raises(ValueError, match="source must be an IMAGE tensor"):
        ImageCompositeMasked().run(None, torch.zeros(1, 4, 4, 3), torch.zeros(4, 4, 3), 0, 0, False)


def expected_outpaint_mask(height, width, left, top, right, bottom, feathering):
    """The reference rule, pixel by pixel: 1 on the border; inside, k = the distance to the nearest padded side,
    measured y from the top and height - y from the bottom (x, width - x likewise), value ((F - k) / F)^2 for
    k < F -- only when 0 < 2F < height and 2F < width, else 0 inside."""
    mask = np.ones((top + height + bottom, left + width + right), np.float64)
    feathered = 0 < feathering and 2 * feathering < height and 2 * feathering < width
    for y in range(height):
        for x in range(width):
            k = min([y] * bool(top) + [height - y] * bool(bottom) + [x] * bool(left) +
                    [width - x] * bool(right) + [10 ** 9])
            inside = ((feathering - k) / feathering) ** 2 if feathered and k < feathering else 0.0
            mask[top + y, left + x] = inside
    return mask


@pytest.mark.parametrize("pad,feathering", [((2, 0, 3, 1), 2), ((0, 4, 0, 0), 2), ((1, 1, 1, 1), 10),
                                            ((3, 0, 0, 0), 0), ((0, 0, 0, 0), 5), ((0, 0, 2, 2), 3),
                                            ((1, 1, 1, 1), 1)])
def test_pad_for_outpaint(pad, feathering):
    left, top, right, bottom = pad
    image = numbered(2, 5, 6) / 10000.0
    padded, mask = ImagePadForOutpaint().run(None, image, left, top, right, bottom, feathering)
    assert padded.shape == (2, 5 + top + bottom, 6 + left + right, 3) and padded.dtype == torch.float32
    assert torch.equal(padded[:, top:top + 5, left:left + 6], image)
    border = torch.ones(padded.shape[1:3], dtype=torch.bool)
    border[top:top + 5, left:left + 6] = False
    assert torch.all(padded[:, border] == 0.5)
    assert mask.shape == (1, *padded.shape[1:3]) and mask.dtype == torch.float32
    assert np.allclose(mask[0].numpy(), expected_outpaint_mask(5, 6, left, top, right, bottom, feathering))


def test_pad_for_outpaint_feather_values():
    _, mask = ImagePadForOutpaint().run(None, torch.zeros(1, 10, 10, 3), 2, 0, 2, 0, 4)
    assert np.allclose(mask[0, 0].numpy(), [1, 1, 1, 0.5625, 0.25, 0.0625, 0, 0, 0, 0.0625, 0.25, 0.5625, 1, 1])
    _, too_wide = ImagePadForOutpaint().run(None, torch.zeros(1, 10, 8, 3), 2, 0, 0, 0, 4)  # 2 * 4 is not < 8
    assert torch.equal(too_wide[0, :, 2:], torch.zeros(10, 8))


def test_outpaint_graph_through_the_scheduler(tmp_path):
    engine = Engine()
    engine.executor.services = Services.for_directory(str(tmp_path))
    prompt = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0xFF0000}},
        "pad": {"class_type": "ImagePadForOutpaint",
                "inputs": {"image": ["img", 0], "left": 0, "top": 0, "right": 8, "bottom": 8, "feathering": 2}},
        "m2i": {"class_type": "MaskToImage", "inputs": {"mask": ["pad", 1]}},
        "save_mask": {"class_type": "SaveImage", "inputs": {"images": ["m2i", 0], "filename_prefix": "mask"}},
        "save_image": {"class_type": "SaveImage", "inputs": {"images": ["pad", 0], "filename_prefix": "padded"}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success", sink.of("execution_error")

    def saved(node_id):
        entry = outcome.outputs[node_id]["images"][0]
        path = os.path.join(engine.executor.services.paths.output_dir, entry["subfolder"], entry["filename"])
        return np.asarray(Image.open(path).convert("RGB"))

    mask_png, image_png = saved("save_mask"), saved("save_image")
    assert mask_png.shape == image_png.shape == (12, 16, 3)
    want = np.round(expected_outpaint_mask(4, 8, 0, 0, 8, 8, 2) * 255)
    assert np.abs(mask_png[..., 0].astype(int) - want).max() <= 1
    assert np.array_equal(image_png[:4, :8], np.broadcast_to([255, 0, 0], (4, 8, 3)))
    grey = np.abs(image_png.astype(int) - 128) <= 1
    assert np.all(grey[4:]) and np.all(grey[:, 8:])
