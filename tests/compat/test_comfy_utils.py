"""comfy.utils: safe checkpoint loading, common_upscale, ProgressBar outside a job; comfy.model_management basics."""
import os
import math
import pickle

import numpy as np

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture
def utils(bound):
    import comfy.utils
    return comfy.utils


class _RunsShell:
    """A pickle payload: unpickling it would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_load_safetensors(utils, tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_file({"w": torch.arange(6, dtype=torch.float32).view(2, 3)}, path, metadata={"format": "pt"})
    sd = utils.load_torch_file(path)
    assert list(sd) == ["w"] and torch.equal(sd["w"], torch.arange(6, dtype=torch.float32).view(2, 3))
    sd, meta = utils.load_torch_file(path, return_metadata=True)
    assert meta == {"format": "pt"} and sd["w"].device.type == "cpu"


def test_load_plain_tensor_pickle(utils, tmp_path):
    path = str(tmp_path / "m.pt")
    torch.save({"a": torch.ones(2), "b": torch.zeros(3)}, path)
    sd = utils.load_torch_file(path, safe_load=False)
    assert set(sd) == {"a", "b"} and torch.equal(sd["a"], torch.ones(2))
    wrapped = str(tmp_path / "wrapped.ckpt")
    torch.save({"state_dict": {"x": torch.ones(1)}, "global_step": 10}, wrapped)
    assert list(utils.load_torch_file(wrapped)) == ["x"]


def test_refuses_pickle_that_runs_code(utils, tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pt")
    torch.save({"weights": torch.ones(1), "payload": _RunsShell(marker)}, path)
    with open(path, "rb") as f:
        assert b"system" in f.read()  # the file really carries the os.system call
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        utils.load_torch_file(path)
    with pytest.raises(pickle.UnpicklingError):
        utils.load_torch_file(path, safe_load=False)  # the flag never unlocks a free unpickle
    assert not marker.exists()


@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos", "bislerp"])
def test_common_upscale_shapes(utils, method):
    samples = torch.rand(2, 3, 16, 24)
    out = utils.common_upscale(samples, 20, 32, method, "disabled")
    assert out.shape == (2, 3, 32, 20) and out.dtype == samples.dtype


def _source_coordinates(out_size, in_size):
    """Half-pixel centres: output pixel j samples input position (j + 0.5) * in/out - 0.5."""
    return (np.arange(out_size) + 0.5) * in_size / out_size - 0.5


def _resize_1d(values, out_size, kernel, support):
    """Independent separable resampling along the last axis with clamped borders."""
    in_size = values.shape[-1]
    out = np.zeros(values.shape[:-1] + (out_size,))
    for j, x in enumerate(_source_coordinates(out_size, in_size)):
        base = int(np.floor(x))
        taps = range(base - support + 1, base + support + 1)
        weights = np.array([kernel(x - t) for t in taps])
        for t, w in zip(taps, weights):
            out[..., j] += w * values[..., min(max(t, 0), in_size - 1)]
    return out


def _keys_cubic(t, a=-0.75):
    t = abs(t)
    if t <= 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return 0.0


def test_resize_values_against_independent_definitions(utils):
    torch.manual_seed(5)
    image = torch.rand(1, 2, 4, 6)
    arr = image.double().numpy()
    nearest = utils.common_upscale(image, 12, 8, "nearest-exact")
    assert torch.equal(nearest, image.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    area = utils.common_upscale(image, 3, 2, "area")
    assert torch.allclose(area, image.reshape(1, 2, 2, 2, 3, 2).mean(dim=(3, 5)), atol=1e-6)
    tent = lambda t: max(0.0, 1.0 - abs(t))  # noqa: E731
    bilinear = _resize_1d(_resize_1d(arr, 9, tent, 1).swapaxes(-1, -2), 7, tent, 1).swapaxes(-1, -2)
    assert np.allclose(utils.common_upscale(image, 9, 7, "bilinear").numpy(), bilinear, atol=1e-6)
    cubic = _resize_1d(_resize_1d(arr, 9, _keys_cubic, 2).swapaxes(-1, -2), 7, _keys_cubic, 2).swapaxes(-1, -2)
    assert np.allclose(utils.common_upscale(image, 9, 7, "bicubic").numpy(), cubic, atol=1e-5)


def _lanczos3(t):
    if t == 0:
        return 1.0
    if abs(t) >= 3:
        return 0.0
    return 3 * np.sin(np.pi * t) * np.sin(np.pi * t / 3) / (np.pi * t) ** 2


def test_lanczos_values_match_a_normalised_lanczos3_on_8_bit_pixels(utils):
    """Upscaling 2x: each output pixel is the normalised lanczos-3 sum over the input (clamped window, weights
    renormalised at the border), computed on the 8-bit image; within one 8-bit step of the result."""
    torch.manual_seed(6)
    image = (torch.rand(1, 3, 5, 7) * 255).round() / 255
    out = utils.common_upscale(image, 14, 10, "lanczos").double().numpy()
    src = (image.double().numpy() * 255).round()

    def along(values, out_size):
        in_size = values.shape[-1]
        result = np.zeros(values.shape[:-1] + (out_size,))
        for j in range(out_size):
            centre = (j + 0.5) * in_size / out_size
            lo, hi = max(int(centre - 3 + 0.5), 0), min(int(centre + 3 + 0.5), in_size)
            weights = np.array([_lanczos3(x - centre + 0.5) for x in range(lo, hi)])
            result[..., j] = (values[..., lo:hi] * (weights / weights.sum())).sum(-1)
        return np.clip(np.round(result), 0, 255)

    expected = along(along(src, 14).swapaxes(-1, -2), 10).swapaxes(-1, -2) / 255
    assert np.abs(out - expected).max() <= 2 / 255 + 1e-9
    assert np.abs(out - expected).mean() < 0.5 / 255
    flat = utils.common_upscale(torch.full((1, 3, 4, 4), 0.6), 9, 9, "lanczos")
    assert torch.allclose(flat, torch.full_like(flat, round(0.6 * 255) / 255), atol=1e-6)


def test_bislerp_turns_between_directions_and_keeps_lengths(utils):
    samples = torch.zeros(1, 2, 1, 2)
    samples[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    samples[0, :, 0, 1] = torch.tensor([0.0, 2.0])
    out = utils.common_upscale(samples, 4, 1, "bislerp")[0, :, 0]  # positions -0.25 (clamped), 0.25, 0.75, 1.25
    for column, t in ((1, 0.25), (2, 0.75)):
        angle = t * math.pi / 2
        length = 1.0 * (1 - t) + 2.0 * t
        want = torch.tensor([math.cos(angle), math.sin(angle)]) * length
        assert torch.allclose(out[:, column], want, atol=1e-5), (column, out[:, column], want)
    assert torch.allclose(out[:, 0], torch.tensor([1.0, 0.0])) and torch.allclose(out[:, 3], torch.tensor([0.0, 2.0]))


def test_common_upscale_center_crop(utils):
    samples = torch.rand(1, 4, 10, 20)
    out = utils.common_upscale(samples, 10, 10, "nearest-exact", "center")
    assert out.shape == (1, 4, 10, 10)
    assert torch.equal(out, samples[..., 5:15])
    tall = torch.rand(1, 3, 20, 10)
    assert torch.equal(utils.common_upscale(tall, 10, 10, "nearest-exact", "center"), tall[..., 5:15, :])
    odd = torch.rand(1, 1, 3, 7)  # 7x3 to square: keep 3 of 7 columns, 2 cut on each side
    assert torch.equal(utils.common_upscale(odd, 3, 3, "nearest-exact", "center"), odd[..., 2:5])
    half = torch.rand(1, 1, 3, 6)  # a margin of 1.5 rounds half to even (2): 2 columns stay, then resized
    assert torch.equal(utils.common_upscale(half, 2, 2, "nearest-exact", "center")[..., 0, :], half[..., 0, 2:4])
    video = utils.common_upscale(torch.rand(1, 4, 3, 8, 8), 16, 12, "bilinear")
    assert video.shape == (1, 4, 3, 12, 16)
    with pytest.raises(ValueError):
        utils.common_upscale(samples, 8, 8, "magic")


def test_bislerp_keeps_identical_vectors(utils):
    samples = torch.ones(1, 4, 4, 4) * 0.5
    out = utils.common_upscale(samples, 8, 8, "bislerp", "disabled")
    assert torch.allclose(out, torch.full((1, 4, 8, 8), 0.5), atol=1e-5)


def test_progress_bar_outside_a_job_only_counts(utils):
    bar = utils.ProgressBar(5)
    bar.update(2)
    bar.update_absolute(9)  # clamped to the total
    assert bar.current == 5 and bar.total == 5
    bar.update_absolute(3, total=10)
    assert (bar.current, bar.total) == (3, 10)
    assert utils.PROGRESS_BAR_ENABLED is True


def test_model_management_outside_a_job(bound):
    import comfy.model_management as mm
    from execution.context import Interrupted

    assert mm.InterruptProcessingException is Interrupted
    expected = "cuda" if torch.cuda.is_available() else ("mps" if mm._mps_available() else "cpu")
    assert mm.get_torch_device().type == expected  # the device the engine picked: CUDA, else MPS, else CPU
    assert mm.intermediate_device().type == "cpu" and mm.unet_offload_device().type == "cpu"
    assert not mm.processing_interrupted()
    mm.throw_exception_if_processing_interrupted()  # no job: nothing to raise
    mm.interrupt_current_processing()  # no job: nothing to interrupt
    mm.soft_empty_cache()
    assert mm.get_free_memory(torch.device("cpu")) > 0 and mm.get_total_memory(torch.device("cpu")) > 0


def test_state_dict_prefix_replace_moves_renamed_keys(utils):
    one, two = torch.ones(1), torch.zeros(1)
    sd = {"model.a": one, "model.b": two, "other.c": one}
    out = utils.state_dict_prefix_replace(sd, {"model.": "unet."})
    assert out is sd and set(sd) == {"unet.a", "unet.b", "other.c"} and sd["unet.a"] is one
    sd = {"model.a": one, "other.c": two}
    only = utils.state_dict_prefix_replace(sd, {"model.": "", "other.": "o."}, filter_keys=True)
    assert only == {"a": one, "o.c": two} and sd == {}  # renamed entries move out of the source


@pytest.mark.parametrize("width,height,tile,overlap", [
    (513, 512, 512, 64),   # one pixel too wide for a single tile
    (1024, 512, 512, 64),
    (100, 30, 32, 8),      # tiles start every 24 pixels: 0, 24, 48, 72, 96 -> pulled back to end inside
    (70, 70, 32, 8),
])
def test_tiled_scale_runs_as_many_tiles_as_its_step_count_says(utils, width, height, tile, overlap):
    calls = []

    def double(piece):  # a 2x nearest-neighbour "upscaler": every tile's output agrees on shared pixels
        calls.append(tuple(piece.shape))
        return piece.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    image = torch.rand(1, 3, height, width)
    out = utils.tiled_scale(image, double, tile_x=tile, tile_y=tile, overlap=overlap, upscale_amount=2)
    # closed form of the step count: ceil(size / stride) per axis
    stride = tile - overlap
    assert utils.get_tiled_scale_steps(width, height, tile, tile, overlap) == \
        -(-height // stride) * -(-width // stride) == len(calls)
    assert all(h <= tile and w <= tile for _, _, h, w in calls)
    torch.testing.assert_close(out, double(image))  # feathered blending of agreeing tiles changes nothing


def test_tiled_scale_blends_disagreeing_tiles_across_the_overlap(utils):
    """Tiles that each return their own constant meet in a linear ramp, not a hard seam."""
    counter = iter(range(100))

    def constant(piece):
        return torch.full_like(piece, float(next(counter)))

    out = utils.tiled_scale(torch.zeros(1, 1, 8, 40), constant, tile_x=24, tile_y=16, overlap=8,
                            upscale_amount=1, out_channels=1)
    row = out[0, 0, 0]  # tiles start at 0, 16 and 32 (stride 24 - 8)
    assert torch.all(row[:16] == 0) and torch.all(row[24:32] == 1)  # where one tile is alone (or all agree)
    ramp = row[16:24]                                                # tiles 0 and 1 overlap here
    assert torch.all(ramp[1:] > ramp[:-1]) and 0 < ramp[0] < ramp[-1] < 1


def test_tiled_scale_single_tile_calls_once(utils):
    calls = []
    out = utils.tiled_scale(torch.rand(2, 3, 16, 16), lambda p: calls.append(1) or p * 2, tile_x=32, tile_y=32,
                            overlap=4, upscale_amount=1)
    assert len(calls) == 2 and out.shape == (2, 3, 16, 16)  # once per batch item
