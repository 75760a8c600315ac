"""Image batch nodes on small synthetic batches, and RebatchImages' list output through the real scheduler."""
import pytest
import torch

from nodes.image_batch import ImageBatch, ImageFromBatch, RebatchImages, RepeatImageBatch


def solid(batch, height, width, value, channels=3):
    return torch.full((batch, height, width, channels), float(value))


def test_image_batch_same_size_concatenates():
    a, b = torch.rand(2, 4, 5, 3), torch.rand(3, 4, 5, 3)
    out = ImageBatch().run(None, a, b)[0]
    assert out.shape == (5, 4, 5, 3) and out.dtype == torch.float32
    assert torch.equal(out[:2], a) and torch.equal(out[2:], b)


def test_image_batch_resizes_image2_bilinearly_to_image1():
    a = torch.zeros(1, 2, 2, 3)
    # a 2x4 image2, left half 0 and right half 1: centre-cropped to 2x2 (columns 1..2), then already 2x2
    b = torch.zeros(1, 2, 4, 3)
    b[:, :, 2:] = 1.0
    out = ImageBatch().run(None, a, b)[0]
    assert out.shape == (2, 2, 2, 3)
    assert torch.allclose(out[1, :, :, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    # a 1x2 image2 scaled to 2x4: bilinear with half-pixel centres gives 0, 0.25, 0.75, 1 across each row
    wide = torch.zeros(1, 2, 4, 3)
    small = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1).expand(1, 1, 2, 3)
    out = ImageBatch().run(None, wide, small)[0]
    assert out.shape == (2, 2, 4, 3)
    assert torch.allclose(out[1, 0, :, 1], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def test_image_batch_rgb_with_rgba_gains_opaque_alpha():
    out = ImageBatch().run(None, solid(1, 2, 2, 0.2), solid(1, 2, 2, 0.4, channels=4))[0]
    assert out.shape == (2, 2, 2, 4)
    assert torch.all(out[0, ..., 3] == 1.0) and torch.all(out[1, ..., 3] == 0.4)


def test_repeat_image_batch():
    a = torch.stack([solid(1, 2, 2, 0.1)[0], solid(1, 2, 2, 0.9)[0]])
    out = RepeatImageBatch().run(None, a, 3)[0]
    assert out.shape == (6, 2, 2, 3)
    assert [round(float(v), 2) for v in out[:, 0, 0, 0]] == [0.1, 0.9, 0.1, 0.9, 0.1, 0.9]


def test_image_from_batch():
    batch = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 2, 2, 3).contiguous()
    out = ImageFromBatch().run(None, batch, 1, 2)[0]
    assert [float(v) for v in out[:, 0, 0, 0]] == [1.0, 2.0]
    tail = ImageFromBatch().run(None, batch, 3, 10)[0]  # stops at the end of the batch
    assert [float(v) for v in tail[:, 0, 0, 0]] == [3.0, 4.0]
    out[0] = 7.0  # a copy: the input batch is untouched
    assert float(batch[1, 0, 0, 0]) == 1.0
    assert torch.equal(ImageFromBatch().run(None, batch, 9, 3)[0], batch[4:5])  # past the end: the last image


def test_rebatch_images_regroups_in_order_and_splits_on_size_change():
    a = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 2, 2, 3)
    b = torch.arange(3, 5, dtype=torch.float32).view(2, 1, 1, 1).expand(2, 2, 2, 3)
    c = torch.full((2, 3, 3, 3), 9.0)
    out = RebatchImages().run(None, [a, b, c], [2])[0]
    assert [tuple(t.shape) for t in out] == [(2, 2, 2, 3), (2, 2, 2, 3), (1, 2, 2, 3), (2, 3, 3, 3)]
    assert [float(v) for t in out[:3] for v in t[:, 0, 0, 0]] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_errors_name_the_input():
    with pytest.raises(ValueError, match=r"image2 must be an IMAGE tensor"):
        ImageBatch().run(None, torch.zeros(1, 2, 2, 3), torch.zeros(2, 2, 3))
    with pytest.raises(ValueError, match=r"images\[1\] must be an IMAGE tensor"):
        RebatchImages().run(None, [torch.zeros(1, 2, 2, 3), torch.zeros(2, 2)], [1])


def test_rebatch_list_output_through_the_scheduler(engine):
    """5 images rebatched by 2 give a list of 3 batches; the next node runs once per batch."""
    prompt = {"e": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 3, "batch_size": 5, "color": 0}},
              "r": {"class_type": "RebatchImages", "inputs": {"images": ["e", 0], "batch_size": 2}},
              "i": {"class_type": "ImageInvert", "inputs": {"image": ["r", 0]}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["i", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success"
    texts = outcome.outputs["out"]["text"]
    assert [t.split(" (")[0] for t in texts] == ["Tensor of shape [2, 3, 4, 3]", "Tensor of shape [2, 3, 4, 3]",
                                                 "Tensor of shape [1, 3, 4, 3]"]
