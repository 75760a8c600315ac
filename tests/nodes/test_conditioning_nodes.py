"""Conditioning, latent and image-scale nodes that need no model."""
import pytest
import torch

from nodes.conditioning import (ConditioningAverage, ConditioningCombine, ConditioningConcat, ConditioningSetArea,
                                ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask,
                                ConditioningSetTimestepRange, ConditioningZeroOut)
from nodes.image_transform import ImageScale, ImageScaleBy
from nodes.latent import EmptyLatentImage


def cond(value, tokens=77, dim=8, pooled=None):
    opts = {} if pooled is None else {"pooled_output": torch.full((1, 4), float(pooled))}
    return [[torch.full((1, tokens, dim), float(value)), opts]]


def test_combine_concat_and_average():
    a, b = cond(1, pooled=1), cond(3, tokens=154, pooled=3)
    assert len(ConditioningCombine().run(None, a, b)[0]) == 2
    concat = ConditioningConcat().run(None, a, b)[0]
    assert concat[0][0].shape == (1, 231, 8) and concat[0][1] == a[0][1]
    avg = ConditioningAverage().run(None, a, b, 0.25)[0]
    assert avg[0][0].shape == (1, 77, 8) and torch.allclose(avg[0][0], torch.full((1, 77, 8), 2.5))
    assert torch.allclose(avg[0][1]["pooled_output"], torch.full((1, 4), 2.5))
    short = ConditioningAverage().run(None, b, cond(1, tokens=77), 0.5)[0][0][0]
    assert short.shape == (1, 154, 8) and short[0, 100, 0] == 1.5  # padded with zeros beyond 77
    with pytest.raises(ValueError, match="different text encoders"):
        ConditioningConcat().run(None, a, cond(1, dim=16))


def test_inputs_are_never_modified():
    a = cond(1, pooled=1)
    ConditioningSetArea().run(None, a, 64, 128, 8, 16, 0.5)
    ConditioningZeroOut().run(None, a)
    assert a[0][1].keys() == {"pooled_output"} and a[0][0].max() == 1


def test_area_mask_strength_and_timestep_range():
    a = cond(1)
    area = ConditioningSetArea().run(None, a, 64, 128, 8, 16, 0.5)[0][0][1]
    assert area == {"area": (16, 8, 2, 1), "strength": 0.5, "set_area_to_bounds": False}
    pct = ConditioningSetAreaPercentage().run(None, a, 0.5, 0.25, 0.1, 0.2, 1.0)[0][0][1]
    assert pct["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    assert ConditioningSetAreaStrength().run(None, a, 2.0)[0][0][1]["strength"] == 2.0
    masked = ConditioningSetMask().run(None, a, torch.ones(8, 8), 0.7, "mask bounds")[0][0][1]
    assert masked["mask"].shape == (1, 8, 8) and masked["set_area_to_bounds"] and masked["mask_strength"] == 0.7
    ranged = ConditioningSetTimestepRange().run(None, a, 0.2, 0.6)[0][0][1]
    assert ranged["start_percent"] == 0.2 and ranged["end_percent"] == 0.6
    with pytest.raises(ValueError, match="start"):
        ConditioningSetTimestepRange().run(None, a, 0.8, 0.2)
    zero = ConditioningZeroOut().run(None, cond(5, pooled=5))[0][0]
    assert zero[0].abs().max() == 0 and zero[1]["pooled_output"].abs().max() == 0


def test_empty_latent_and_image_scaling():
    latent = EmptyLatentImage().run(None, 512, 768, 3)[0]["samples"]
    assert latent.shape == (3, 4, 96, 64) and latent.abs().max() == 0
    image = torch.rand(2, 30, 40, 3)
    from diffusion.image_ops import common_upscale
    for method in ("nearest-exact", "bilinear", "area", "bicubic", "lanczos"):
        out = ImageScale().run(None, image, method, 20, 15, "disabled")[0]
        assert out.shape == (2, 15, 20, 3) and 0 <= out.min() and out.max() <= 1
        # the values are the resize of each channel plane (checked against independent definitions in
        # tests/compat/test_comfy_utils.py), nothing mixed across channels or images
        want = common_upscale(image.movedim(-1, 1), 20, 15, method).movedim(1, -1)
        assert torch.allclose(out, want.clamp(0, 1), atol=1e-6), method
    halved = ImageScale().run(None, image, "area", 20, 15, "disabled")[0]
    assert torch.allclose(halved, image.reshape(2, 15, 2, 20, 2, 3).mean(dim=(2, 4)), atol=1e-6)
    tall = ImageScale().run(None, image, "bilinear", 80, 0, "disabled")[0]
    assert tall.shape == (2, 60, 80, 3)  # height 0 keeps the aspect ratio
    nearest = ImageScale().run(None, image, "nearest-exact", 80, 60, "disabled")[0]
    assert torch.equal(nearest, image.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2))
    square = ImageScale().run(None, image, "bilinear", 30, 30, "center")[0]
    assert torch.allclose(square, image[:, :, 5:35], atol=1e-6)  # centre 30x30 of 40x30, no resampling needed
    assert torch.allclose(ImageScaleBy().run(None, image, "area", 0.5)[0], halved, atol=1e-6)
    flat = torch.full((1, 8, 8, 3), 0.5)
    assert torch.allclose(ImageScaleBy().run(None, flat, "bicubic", 2.0)[0], torch.full((1, 16, 16, 3), 0.5),
                          atol=1e-5)


def test_flux_guidance_sets_the_value_on_every_entry_of_a_copy():
    from nodes.conditioning import FluxGuidance
    a, b = torch.rand(1, 77, 8), torch.rand(1, 77, 8)
    source = [[a, {"pooled_output": None}], [b, {"guidance": 1.0, "strength": 0.5}]]
    out = FluxGuidance().run(None, source, 3.5)[0]
    assert [opts["guidance"] for _, opts in out] == [3.5, 3.5]
    assert out[1][1]["strength"] == 0.5 and out[0][0] is a
    assert "guidance" not in source[0][1] and source[1][1]["guidance"] == 1.0  # the input is not changed
