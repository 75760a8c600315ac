"""Reading weight files: safetensors, weights-only pickles, and clear errors for everything else."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from model_management.file_loading import (ModelFileError, RefusedPickleError, load_state_dict,
                                           read_safetensors_metadata, split_prefix, unwrap_state_dict)
from model_management.hashing import HashCache, autov2, sha256_of_file


def test_safetensors_with_metadata(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_file({"a.weight": torch.ones(2, 3, dtype=torch.float16)}, path, metadata={"format": "pt"})
    state, meta = load_state_dict(path, with_metadata=True)
    assert state["a.weight"].dtype == torch.float16 and meta == {"format": "pt"}
    assert read_safetensors_metadata(path) == {"format": "pt"}


def test_truncated_and_corrupted_safetensors_are_named(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_file({"w": torch.zeros(1000)}, path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-100])
    with pytest.raises(ModelFileError, match=r"m\.safetensors.*truncated"):
        load_state_dict(path)
    open(path, "wb").write(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelFileError, match=r"m\.safetensors"):
        load_state_dict(path)
    open(path, "wb").write(b"\x01")
    with pytest.raises(ModelFileError, match="too short"):
        load_state_dict(path)


def test_plain_pickles_load_and_nested_state_dicts_unwrap(tmp_path):
    path = str(tmp_path / "m.ckpt")
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "global_step": 5}, path)
    assert torch.equal(load_state_dict(path)["w"], torch.arange(3.0))
    assert unwrap_state_dict({"params": {"x": torch.zeros(1)}}).keys() == {"x"}


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/tessera-pwned-by-pickle",))


def test_a_pickle_that_tries_to_run_code_is_refused(tmp_path):
    marker = "/tmp/tessera-pwned-by-pickle"
    if os.path.exists(marker):
        os.remove(marker)
    path = str(tmp_path / "evil.pt")
    with open(path, "wb") as f:
        pickle.dump({"w": Evil()}, f)
    with pytest.raises(RefusedPickleError, match="evil.pt: refused"):
        load_state_dict(path)
    assert not os.path.exists(marker)


def test_missing_unknown_and_garbage_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_state_dict(str(tmp_path / "nope.safetensors"))
    odd = tmp_path / "weights.txt"
    odd.write_text("hello")
    with pytest.raises(ModelFileError, match="unknown weight file type"):
        load_state_dict(str(odd))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelFileError, match="junk.ckpt"):
        load_state_dict(str(junk))


def test_split_prefix():
    state = {"a.x": 1, "a.y": 2, "b.z": 3}
    assert split_prefix(state, "a.") == {"x": 1, "y": 2}


def test_hashes_are_cached_until_the_file_changes(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"hello world")
    expected = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert sha256_of_file(str(path)) == expected and autov2(expected) == "b94d27b993"
    cache = HashCache(str(tmp_path / "hashes.json"))
    assert cache.sha256(str(path)) == expected and cache.autov2(str(path)) == "b94d27b993"
    assert cache.computed == 1
    again = HashCache(str(tmp_path / "hashes.json"))  # persisted across runs
    assert again.sha256(str(path)) == expected and again.computed == 0
    os.utime(path, (1, 1))
    path.write_bytes(b"changed")
    assert again.sha256(str(path)) != expected and again.computed == 1
