"""comfy.utils: safe checkpoint loading, common_upscale, ProgressBar outside a job; comfy.model_management basics."""
import os
import pickle

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
    assert mm.get_torch_device().type == ("cuda" if torch.cuda.is_available() else mm.get_torch_device().type)
    if not torch.cuda.is_available() and not mm._mps_available():
        assert mm.get_torch_device().type == "cpu"
    assert mm.intermediate_device().type == "cpu" and mm.unet_offload_device().type == "cpu"
    assert not mm.processing_interrupted()
    mm.throw_exception_if_processing_interrupted()  # no job: nothing to raise
    mm.interrupt_current_processing()  # no job: nothing to interrupt
    mm.soft_empty_cache()
    assert mm.get_free_memory(torch.device("cpu")) > 0 and mm.get_total_memory(torch.device("cpu")) > 0
