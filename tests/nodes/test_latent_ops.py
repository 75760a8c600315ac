"""Latent toolbox nodes: exact results computed independently here, extras (noise_mask, batch_index) kept
consistent, and interfaces as in the reference catalogue (for every node of this task)."""
import math

import pytest
import torch

from nodes import inpaint, latent_io, latent_ops
from tests.reference import load_reference

OWN_NODES = latent_ops.NODES + latent_io.NODES + inpaint.NODES


def _without_docs(value):
    """A catalogue entry without tooltips (and the option dicts they leave empty)."""
    if isinstance(value, dict):
        return {k: _without_docs(v) for k, v in value.items() if k != "tooltip"}
    if isinstance(value, list):
        items = [_without_docs(v) for v in value]
        return items[:1] if len(items) == 2 and items[1] == {} else items
    return value


def _reference_form(spec):
    """Our declaration in the reference's terms: no tooltips, combos without their implied first-choice default,
    folder-listing combos as FILES:input."""
    entry = spec.to_catalogue()
    inputs = {}
    for section, values in entry["input"].items():
        inputs[section] = {}
        for name, value in values.items():
            declared = next(i for i in spec.inputs if i.name == name)
            value = _without_docs(value)
            if declared.is_combo and isinstance(value, list):
                head = "FILES:input" if callable(declared.choices) else value[0]
                options = dict(value[1]) if len(value) > 1 else {}
                if not callable(declared.choices) and options.get("default") == head[0]:
                    options.pop("default")
                if callable(declared.choices):
                    options.pop("default", None)
                value = [head, options] if options else [head]
            inputs[section][name] = value
    entry["input"] = inputs
    return entry


@pytest.mark.parametrize("cls", OWN_NODES, ids=lambda c: c.SPEC.name)
def test_interface_matches_the_reference(cls):
    reference = load_reference()[cls.SPEC.name]
    ours = _reference_form(cls.SPEC)
    for key in ("category", "input", "input_order", "output", "output_name", "output_is_list", "output_node"):
        assert ours[key] == reference[key], key
    assert ours["display_name"] == (reference["display_name"] or cls.SPEC.name)
    # our own docs: a description and a tooltip on every input and output
    assert ours["description"]
    assert all(i.options.get("tooltip") for i in cls.SPEC.inputs if i.section != "hidden")
    assert all(o.tooltip for o in cls.SPEC.outputs)


def run(cls, **kw):
    return cls().run(None, **kw)[0]


def grid(b=1, c=4, h=4, w=4):
    return torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)


# -- resize -------------------------------------------------------------------------------------------------------

def test_upscale_nearest_exact_and_width_zero_keeps_the_aspect():
    src = grid(1, 4, 8, 12)
    out = run(latent_ops.LatentUpscale, samples={"samples": src}, upscale_method="nearest-exact", width=0,
              height=128, crop="disabled")["samples"]
    assert out.shape == (1, 4, 16, 24)  # 96x64 px -> 192x128 px
    assert torch.equal(out, src.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    same = run(latent_ops.LatentUpscale, samples={"samples": src}, upscale_method="bilinear", width=0, height=0,
               crop="disabled")
    assert same["samples"] is src


def test_upscale_area_averages_and_center_crop_cuts_the_sides():
    src = grid(1, 4, 8, 16)
    half = run(latent_ops.LatentUpscale, samples={"samples": src}, upscale_method="area", width=64, height=64,
               crop="disabled")["samples"]
    # 8x16 cells -> 8x8 cells: each output cell is the mean of two neighbours along the width
    expected = (src[..., 0::2] + src[..., 1::2]) / 2
    assert torch.allclose(half, expected, atol=1e-5)
    mask = torch.zeros(1, 64, 128)
    mask[:, :, 80:] = 1.0  # the crop keeps mask columns 32..95: cells 6 and 7 of the result
    cropped = run(latent_ops.LatentUpscale, samples={"samples": src, "noise_mask": mask},
                  upscale_method="nearest-exact", width=64, height=64, crop="center")
    assert torch.equal(cropped["samples"], src[..., 4:12])  # the middle 8 of 16 columns
    assert cropped["noise_mask"].shape == (1, 1, 8, 8)
    assert torch.equal(cropped["noise_mask"][0, 0, 0], torch.tensor([0., 0., 0., 0., 0., 0., 1., 1.]))


def test_upscale_by_bislerp_interpolates_directions_on_the_sphere():
    a = torch.tensor([1.0, 0, 0, 0]).view(1, 4, 1, 1)
    b = torch.tensor([0, 1.0, 0, 0]).view(1, 4, 1, 1)
    src = torch.cat([a, b], dim=3)  # [1, 4, 1, 2]
    out = run(latent_ops.LatentUpscaleBy, samples={"samples": src}, upscale_method="bislerp", scale_by=2.0)
    out = out["samples"]
    assert out.shape == (1, 4, 2, 4)
    # the second column sits a quarter of the way from a to b: angle 22.5 degrees, length 1
    angle = math.pi / 8
    assert torch.allclose(out[0, :2, 0, 1], torch.tensor([math.cos(angle), math.sin(angle)]), atol=1e-5)
    assert torch.allclose(out[0, :, 0, 0], a.flatten()) and torch.allclose(out[0, :, 0, 3], b.flatten())


# -- composite ----------------------------------------------------------------------------------------------------

def test_composite_pastes_at_pixel_position_with_linear_feather():
    to = {"samples": torch.zeros(1, 4, 8, 8), "noise_mask": torch.ones(1, 1, 8, 8)}
    src = {"samples": torch.ones(1, 4, 4, 4)}
    plain = run(latent_ops.LatentComposite, samples_to=to, samples_from=src, x=16, y=8, feather=0)
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 1:5, 2:6] = 1.0
    assert torch.equal(plain["samples"], expected) and plain["noise_mask"] is to["noise_mask"]
    feathered = run(latent_ops.LatentComposite, samples_to=to, samples_from=src, x=16, y=8, feather=16)["samples"]
    ramp = torch.tensor([0.5, 1.0, 1.0, 0.5])  # 2 cells of fade on each inner edge
    assert torch.allclose(feathered[0, 0, 1:5, 2:6], ramp[:, None] * ramp[None, :])
    edge = run(latent_ops.LatentComposite, samples_to=to, samples_from=src, x=48, y=0, feather=16)["samples"]
    # against the right and top borders there is no fade: only the left edge ramps
    assert torch.allclose(edge[0, 0, 0, 6:], torch.tensor([0.5, 1.0]))
    assert torch.allclose(edge[0, 0, 3, 6:], torch.tensor([0.25, 0.5]))  # bottom edge fades too
    assert torch.equal(edge[0, 0, :, :6], torch.zeros(8, 6))


def test_composite_masked_blends_through_the_mask_and_resizes_the_source():
    dest = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [4, 5]}
    src = {"samples": torch.full((1, 4, 4, 4), 2.0)}
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # left half of the source
    out = run(latent_ops.LatentCompositeMasked, destination=dest, source=src, x=8, y=8, resize_source=False,
              mask=mask)
    expected = torch.zeros(2, 4, 8, 8)
    expected[:, :, 1:5, 1:3] = 2.0
    assert torch.equal(out["samples"], expected) and out["batch_index"] == [4, 5]
    full = run(latent_ops.LatentCompositeMasked, destination=dest, source=src, x=0, y=0, resize_source=True)
    assert torch.equal(full["samples"], torch.full((2, 4, 8, 8), 2.0))


def test_blend_add_subtract_multiply():
    a, b = grid(), torch.full((1, 4, 4, 4), 3.0)
    blended = run(latent_ops.LatentBlend, samples1={"samples": a}, samples2={"samples": b}, blend_factor=0.25)
    assert torch.allclose(blended["samples"], a * 0.25 + 3.0 * 0.75)
    assert torch.equal(run(latent_ops.LatentAdd, samples1={"samples": a}, samples2={"samples": b})["samples"], a + 3)
    small = {"samples": torch.full((1, 4, 2, 2), 3.0)}  # resized to the first: a constant stays constant
    assert torch.allclose(run(latent_ops.LatentSubtract, samples1={"samples": a}, samples2=small)["samples"], a - 3)
    assert torch.equal(run(latent_ops.LatentMultiply, samples={"samples": a}, multiplier=-0.5)["samples"], a * -0.5)


def test_interpolate_mixes_directions_and_lengths():
    a = torch.zeros(1, 4, 1, 1)
    b = torch.zeros(1, 4, 1, 1)
    a[0, 0] = 3.0
    b[0, 1] = 4.0
    out = run(latent_ops.LatentInterpolate, samples1={"samples": a}, samples2={"samples": b}, ratio=0.5)["samples"]
    assert torch.allclose(out.flatten(), torch.tensor([3.5 / math.sqrt(2), 3.5 / math.sqrt(2), 0, 0]))
    first = run(latent_ops.LatentInterpolate, samples1={"samples": a}, samples2={"samples": b}, ratio=1.0)
    assert torch.allclose(first["samples"], a)
    zero = run(latent_ops.LatentInterpolate, samples1={"samples": torch.zeros(1, 4, 1, 1)}, samples2={"samples": b},
               ratio=0.5)["samples"]
    assert torch.isfinite(zero).all() and torch.allclose(zero.flatten(), torch.tensor([0.0, 2.0, 0, 0]))


# -- batches ------------------------------------------------------------------------------------------------------

def test_from_batch_slices_samples_mask_and_sets_batch_index():
    samples = grid(5, 4, 2, 2)
    mask = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 16, 16)
    out = run(latent_ops.LatentFromBatch, samples={"samples": samples, "noise_mask": mask}, batch_index=1, length=3)
    assert torch.equal(out["samples"], samples[1:4]) and out["batch_index"] == [1, 2, 3]
    assert torch.equal(out["noise_mask"][:, 0, 0, 0], torch.tensor([1.0, 2.0, 3.0]))
    indexed = run(latent_ops.LatentFromBatch, samples={"samples": samples, "batch_index": [10, 11, 12, 13, 14]},
                  batch_index=9, length=4)
    assert torch.equal(indexed["samples"], samples[4:5]) and indexed["batch_index"] == [14]
    shared = run(latent_ops.LatentFromBatch, samples={"samples": samples, "noise_mask": mask[:1]}, batch_index=2,
                 length=2)
    assert shared["noise_mask"].shape[0] == 1  # one mask for the whole batch stays one mask


def test_a_picked_latent_keeps_its_noise_however_it_was_picked():
    from diffusion.sampling.ksampler import prepare_noise
    samples = {"samples": torch.zeros(4, 4, 3, 3)}
    direct = run(latent_ops.LatentFromBatch, samples=samples, batch_index=2, length=1)
    middle = run(latent_ops.LatentFromBatch, samples=samples, batch_index=1, length=3)
    again = run(latent_ops.LatentFromBatch, samples=middle, batch_index=1, length=1)
    assert direct["batch_index"] == again["batch_index"] == [2]
    noise = prepare_noise(middle["samples"], 9, middle["batch_index"])
    assert torch.equal(prepare_noise(direct["samples"], 9, direct["batch_index"]), noise[1:2])


def test_repeat_offsets_batch_index_and_repeats_per_item_masks():
    samples = grid(2, 4, 2, 2)
    mask = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    out = run(latent_ops.RepeatLatentBatch, samples={"samples": samples, "noise_mask": mask, "batch_index": [3, 4]},
              amount=3)
    assert torch.equal(out["samples"], torch.cat([samples] * 3))
    assert out["batch_index"] == [3, 4, 5, 6, 7, 8]
    assert torch.equal(out["noise_mask"][:, 0, 0, 0], torch.tensor([0., 1., 0., 1., 0., 1.]))
    plain = run(latent_ops.RepeatLatentBatch, samples={"samples": samples}, amount=2)
    assert "batch_index" not in plain and plain["samples"].shape[0] == 4


def test_rebatch_regroups_and_never_mixes_sizes():
    l1 = {"samples": grid(3, 4, 2, 2)}
    l2 = {"samples": grid(2, 4, 2, 2) + 100, "noise_mask": torch.zeros(2, 1, 2, 2)}
    l3 = {"samples": torch.zeros(1, 4, 3, 3)}
    out = latent_ops.RebatchLatents().run(None, latents=[l1, l2, l3], batch_size=[2])[0]
    assert [o["samples"].shape[0] for o in out] == [2, 2, 1, 1]
    assert torch.equal(out[1]["samples"], torch.cat([l1["samples"][2:], l2["samples"][:1]]))
    assert out[1]["batch_index"] == [2, 0]
    assert torch.equal(out[1]["noise_mask"][:, 0, 0, 0], torch.tensor([1.0, 0.0]))  # missing mask -> ones
    assert "noise_mask" not in out[0] and out[3]["samples"].shape[-1] == 3


def test_rebatch_through_the_engine_gives_a_list(engine):
    prompt = {
        "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 5}},
        "r": {"class_type": "RebatchLatents", "inputs": {"latents": ["e", 0], "batch_size": 2}},
        "m": {"class_type": "LatentMultiply", "inputs": {"samples": ["r", 0], "multiplier": 2.0}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["m", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert len(outcome.outputs["show"]["text"]) == 3  # batches of 2, 2 and 1


# -- transforms ---------------------------------------------------------------------------------------------------

def test_rotate_clockwise_with_the_mask():
    samples = grid(1, 4, 2, 3)
    mask = grid(1, 1, 2, 3)  # the same values as channel 0 of the samples
    out = run(latent_ops.LatentRotate, samples={"samples": samples, "noise_mask": mask}, rotation="90 degrees")
    H, W = 2, 3
    expected = torch.empty(1, 4, W, H)
    for i in range(W):
        for j in range(H):
            expected[..., i, j] = samples[..., H - 1 - j, i]  # clockwise: row i of the result is column i, bottom up
    assert torch.equal(out["samples"], expected)
    assert torch.equal(out["noise_mask"], expected[:, :1])
    half = run(latent_ops.LatentRotate, samples={"samples": samples}, rotation="180 degrees")["samples"]
    assert torch.equal(half, samples.flip(-1).flip(-2))
    back = run(latent_ops.LatentRotate, samples=out, rotation="270 degrees")
    assert torch.equal(back["samples"], samples)


def test_flip_both_ways():
    samples = grid(1, 4, 3, 3)
    vertical = run(latent_ops.LatentFlip, samples={"samples": samples}, flip_method="x-axis: vertically")["samples"]
    assert torch.equal(vertical[..., 0, :], samples[..., 2, :]) and torch.equal(vertical[..., 1, :], samples[..., 1, :])
    mirrored = run(latent_ops.LatentFlip, samples={"samples": samples, "noise_mask": samples[:, :1]},
                   flip_method="y-axis: horizontally")
    assert torch.equal(mirrored["samples"][..., 0], samples[..., 2])
    assert torch.equal(mirrored["noise_mask"][..., 0], samples[:, :1, :, 2])


def test_crop_in_pixels_with_the_mask_and_a_start_past_the_edge():
    samples = grid(1, 4, 16, 16)
    mask = torch.zeros(1, 128, 128)
    mask[:, 8:16, 16:24] = 1.0  # exactly latent cell (1, 2)
    out = run(latent_ops.LatentCrop, samples={"samples": samples, "noise_mask": mask}, width=64, height=32, x=16,
              y=8)
    assert torch.equal(out["samples"], samples[..., 1:5, 2:10])
    assert out["noise_mask"].shape == (1, 1, 32, 64) and out["noise_mask"][0, 0, :8, :8].eq(1).all()
    assert out["noise_mask"].sum() == 64
    late = run(latent_ops.LatentCrop, samples={"samples": samples}, width=512, height=64, x=200, y=0)
    assert torch.equal(late["samples"], samples[..., 0:8, 8:16])


def test_bad_inputs_name_the_input():
    with pytest.raises(ValueError, match="samples2"):
        run(latent_ops.LatentAdd, samples1={"samples": grid()}, samples2=torch.zeros(1))
    with pytest.raises(ValueError, match="samples_from"):
        run(latent_ops.LatentComposite, samples_to={"samples": grid()}, samples_from={}, x=0, y=0, feather=0)


@pytest.fixture
def engine():
    from tests.conftest import Engine
    return Engine()
