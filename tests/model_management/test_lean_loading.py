"""Loading converts tensor by tensor: the peak memory of a load stays near the converted size (one tensor above
it), never the file plus its converted copy. Peaks are measured in a fresh subprocess (VmHWM: ru_maxrss would
carry the forking pytest process's own peak across exec)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from model_management.file_loading import SKIP, ModelFileError, load_state_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MB = 1 << 20
TENSORS, TENSOR_MB = 24, 8  # 24 fp16 tensors of 8 MB: 192 MB on disk

PROBE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
from model_management.host_allocator import configure_host_allocator
configure_host_allocator()  # as the server runs
import torch
from model_management.file_loading import load_state_dict
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
target = getattr(torch, sys.argv[3])
# first use pages in torch's own code for reading and converting: one tensor's load, before the measure
warm = load_state_dict(sys.argv[2], dtype_for=lambda key, stored: target if key.endswith("block0.weight") else "skip")
del warm
before = rss()
state = load_state_dict(sys.argv[2], dtype_for=lambda key, stored: target)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
held = sum(t.numel() * t.element_size() for t in state.values())
print(json.dumps({"before": before, "peak": peak, "held": held, "dtypes": sorted({str(t.dtype) for t in state.values()})}))
"""


@pytest.fixture(scope="module")
def fp16_file(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    numel = TENSOR_MB * MB // 2
    state = {f"model.diffusion_model.block{i}.weight": torch.randn(numel // 1024, 1024, generator=gen).half()
             for i in range(TENSORS)}
    state["model.diffusion_model.step"] = torch.tensor([3], dtype=torch.int64)
    path = str(tmp_path_factory.mktemp("lean") / "big.safetensors")
    save_file(state, path)
    return path, state


def probe(path, dtype):
    out = subprocess.run([sys.executable, "-c", PROBE, ROOT, path, dtype], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "THP_MEM_ALLOC_ENABLE": "0"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype,factor", [("float32", 2), ("bfloat16", 1)])
def test_a_load_never_holds_the_file_and_its_converted_copy(fp16_file, dtype, factor):
    path, _ = fp16_file
    found = probe(path, dtype)
    file_bytes = TENSORS * TENSOR_MB * MB
    assert found["held"] == file_bytes * factor + 8
    assert found["dtypes"] == sorted({f"torch.{dtype}", "torch.int64"})
    grown = found["peak"] - found["before"]
    # what a whole-file read then a conversion would need: the file, plus the converted copy
    naive = file_bytes + file_bytes * factor
    slack = 16 * MB  # the allocator's and Python's own
    # above what is held: the reader's two staging buffers (one tensor each) and the fp32 chunk buffer
    buffers = 2 * TENSOR_MB * MB + 4 * MB
    assert grown <= found["held"] + buffers + slack, (grown / MB, found["held"] / MB)
    assert grown < naive - TENSOR_MB * MB


def test_the_reader_gives_the_files_values_and_honours_skip(fp16_file):
    path, state = fp16_file
    as_stored = load_state_dict(path)
    assert set(as_stored) == set(state)
    assert all(torch.equal(as_stored[k], state[k]) and as_stored[k].dtype == state[k].dtype for k in state)
    converted = load_state_dict(path, dtype_for=lambda key, stored: SKIP if key.endswith("block3.weight")
                                else torch.float32)
    assert "model.diffusion_model.block3.weight" not in converted and len(converted) == len(state) - 1
    key = "model.diffusion_model.block5.weight"
    assert converted[key].dtype == torch.float32 and torch.equal(converted[key], state[key].float())
    assert converted["model.diffusion_model.step"].dtype == torch.int64  # integers are never converted


def test_corrupt_headers_give_clear_errors(tmp_path):
    import struct
    path = str(tmp_path / "odd.safetensors")
    header = json.dumps({"w": {"dtype": "U32X", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(ModelFileError, match="odd.safetensors: tensor w has the dtype 'U32X'"):
        load_state_dict(path)
    header = json.dumps({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(ModelFileError, match="declares 8 bytes for shape"):
        load_state_dict(path)


def test_a_checkpoints_networks_adopt_the_read_tensors_without_a_copy(tiny_models, monkeypatch):
    from model_management import checkpoints
    seen = {}
    real = checkpoints._load_strict

    def spy(module, state, what, path):
        seen[what] = {k: v.data_ptr() for k, v in state.items()}
        real(module, state, what, path)
        seen[what + " params"] = {k: v.data_ptr() for k, v in module.state_dict().items()}
    monkeypatch.setattr(checkpoints, "_load_strict", spy)
    checkpoints.load_checkpoint(tiny_models.checkpoint("sd1", dtype=torch.float16), want_clip=False,
                                precision=checkpoints.PrecisionPolicy(torch.bfloat16, vae=torch.bfloat16))
    for what in ("UNet", "VAE"):
        given, held = seen[what], seen[what + " params"]
        assert given and all(held[k] == ptr for k, ptr in given.items() if k in held), what


@pytest.mark.parametrize("source,target", [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16),
                                           (torch.float8_e4m3fn, torch.bfloat16), (torch.float16, torch.float8_e5m2)])
def test_narrow_float_conversion_through_fp32_gives_torchs_bits(source, target):
    """`_convert` goes through an fp32 chunk buffer (faster than torch's direct narrow-to-narrow path); the bits
    must be those of `.to()` (NaNs aside): every fp16 bit pattern (subnormals, inf, nan, values beyond fp8's range) and random
    bf16 values beyond fp16's range, across chunk borders."""
    from model_management import file_loading
    if source == torch.float16:
        values = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(torch.float16).repeat(20)
    elif source == torch.bfloat16:
        values = (torch.randn(3 * file_loading.FP32_CHUNK + 17, generator=torch.Generator().manual_seed(1))
                  * 1e5).to(torch.bfloat16)
    else:
        values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn).repeat(9000)
    values = values.reshape(-1, 1) if values.numel() % 7 else values.reshape(-1, 7)
    scratch = []
    got = file_loading._convert(values, target, scratch)
    want = values.to(target)
    assert got.shape == want.shape and got.dtype == target
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)  # a NaN stays a NaN (its payload bits may differ: fp8 has two NaNs)
    assert torch.equal(got[~nan].view(torch.uint8), want[~nan].view(torch.uint8))
    assert len(scratch) == 1 and scratch[0].numel() == file_loading.FP32_CHUNK  # one small buffer, reused


def test_a_read_error_in_the_reader_thread_reaches_the_caller_and_the_thread_ends(fp16_file):
    import threading
    from model_management import file_loading
    path, _ = fp16_file
    size = os.path.getsize(path)
    # an entry that lies past the end of the file (as if the file were cut while it is read)
    entries = [(0, 16, "first", torch.float16, [8], torch.bfloat16),
               (size, size + 16, "late", torch.float16, [8], torch.bfloat16)]
    reader = file_loading._read_in_background(path, entries)
    first = next(reader)
    assert first[0] == "first"
    first[5]()
    with pytest.raises(ModelFileError, match="big.safetensors: the file is truncated at late"):
        next(reader)
    assert not any(t.name == "safetensors-reader" and t.is_alive() for t in threading.enumerate())
    # a caller that stops early (its own error) also ends the reader
    reader = file_loading._read_in_background(path, [(0, 16, f"t{i}", torch.float16, [8], torch.bfloat16)
                                                     for i in range(10)])
    next(reader)
    reader.close()
    assert not any(t.name == "safetensors-reader" and t.is_alive() for t in threading.enumerate())
