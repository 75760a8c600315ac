"""Textual-inversion embeddings: file formats, safe loading, lookup, and injection into the text encoders."""
import copy
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from diffusion.text import ClipTextStack
from model_management.embeddings import (EmbeddingError, EmbeddingLibrary, directory_finder, embedding_finder,
                                         load_embedding_file)
from diffusion.text.tokenizer import default_tokenizer
from model_management.file_loading import ModelFileError, RefusedPickleError

from .builders import hf_hidden, hf_layout_state, hf_model, openclip_reference, openclip_state, prefixed

TOL = 1e-5


def close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= tol, err


def with_extra_tokens(model, vectors):
    """A copy of a transformers CLIP model whose vocabulary has `vectors` appended as ids 49408, 49409, ..."""
    model = copy.deepcopy(model)
    core = model.text_model if hasattr(model, "text_model") else model
    old = core.embeddings.token_embedding.weight.data
    table = nn.Embedding(old.shape[0] + vectors.shape[0], old.shape[1])
    table.weight.data = torch.cat([old, vectors.to(old.dtype)])
    core.embeddings.token_embedding = table
    return model


def padded(ids, pad):
    return [ids + [pad] * (77 - len(ids))]


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture()
def folder(tmp_path):
    return tmp_path


@pytest.fixture(scope="module")
def sd1_model():
    return hf_model(32, 2, 2, seed=21)


def sd1_stack(model, folder):
    state = prefixed(hf_layout_state(model), "cond_stage_model.transformer.")
    return ClipTextStack.from_checkpoint(state, num_heads=2, embeddings=EmbeddingLibrary(directory_finder(str(folder))))


def a1111_pt(path, vectors):
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "style", "step": 500,
                "sd_checkpoint": "0123abcd", "sd_checkpoint_name": "v1-5"}, str(path))


# -- file formats -------------------------------------------------------------------------------------------------------
def test_formats(folder):
    v = torch.randn(3, 32)
    a1111_pt(folder / "a.pt", v)
    save_file({"emb_params": v}, str(folder / "b.safetensors"))
    save_file({"whatever": v}, str(folder / "c.safetensors"))
    torch.save(v, str(folder / "d.pt"))
    torch.save(v[0], str(folder / "e.bin"))
    torch.save({"<my-token>": v[0]}, str(folder / "f.bin"))  # diffusers-style learned_embeds
    save_file({"clip_l": v, "clip_g": torch.randn(3, 64)}, str(folder / "g.safetensors"))
    for name in "abcd":
        sets = load_embedding_file(str(folder / (name + {"a": ".pt", "d": ".pt"}.get(name, ".safetensors"))))
        assert list(sets) == [""] and torch.equal(sets[""], v)
    for name in "ef":
        assert torch.equal(load_embedding_file(str(folder / f"{name}.bin"))[""], v[:1])
    sets = load_embedding_file(str(folder / "g.safetensors"))
    assert sorted(sets) == ["clip_g", "clip_l"] and sets["clip_g"].shape == (3, 64)


def test_unclear_files_are_errors_naming_the_file(folder):
    save_file({"x": torch.zeros(2, 4), "y": torch.zeros(2, 4)}, str(folder / "two.safetensors"))
    with pytest.raises(EmbeddingError, match="two.safetensors"):
        load_embedding_file(str(folder / "two.safetensors"))
    (folder / "junk.pt").write_bytes(b"not a pickle at all")
    with pytest.raises(ModelFileError, match="junk.pt"):  # refused or unreadable, either way named
        load_embedding_file(str(folder / "junk.pt"))
    (folder / "x.txt").write_text("hi")
    with pytest.raises(EmbeddingError, match="x.txt"):
        load_embedding_file(str(folder / "x.txt"))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_malicious_pickle_is_refused_and_never_runs(folder, sd1_model):
    marker = str(folder / "pwned")
    torch.save({"string_to_param": {"*": _Evil(marker)}}, str(folder / "evil.pt"))
    with open(folder / "evil.pt", "rb") as f:
        assert b"makedirs" in f.read()  # the file really carries the call
    with pytest.raises(RefusedPickleError, match="evil.pt"):
        load_embedding_file(str(folder / "evil.pt"))
    stack = sd1_stack(sd1_model, folder)
    with pytest.raises(RefusedPickleError):
        stack.encode("a photo of embedding:evil")
    assert not os.path.exists(marker)


# -- injection ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pt", "safetensors", "bare"])
def test_sd1_injection_matches_manual_insertion(kind, folder, sd1_model, tok):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(5))
    if kind == "pt":
        a1111_pt(folder / "style.pt", vectors)
    elif kind == "safetensors":
        save_file({"emb_params": vectors}, str(folder / "style.safetensors"))
    else:
        torch.save(vectors, str(folder / "style.pt"))
    stack = sd1_stack(sd1_model, folder)
    cond, pooled = stack.encode("a photo of embedding:style")
    plain, _ = stack.encode("a photo of style")
    assert (cond - plain).abs().max() > 1e-2
    ref = with_extra_tokens(sd1_model, vectors)
    ids = tok("a photo of")[:-1] + [49408, 49409, 49407]
    _, last, ref_pooled = hf_hidden(ref, padded(ids, 49407))
    close(cond, last)
    close(pooled, ref_pooled)


def test_weighted_embedding(folder, sd1_model, tok):
    vectors = torch.randn(1, 32)
    save_file({"emb_params": vectors}, str(folder / "style.safetensors"))
    stack = sd1_stack(sd1_model, folder)
    (window,) = stack.tokenize("a (embedding:style:1.4)")["clip_l"]
    assert window.weights[2] == 1.4 and isinstance(window.tokens[2], torch.Tensor)
    cond, _ = stack.encode("a (embedding:style:1.4)")
    ref = with_extra_tokens(sd1_model, vectors)
    z = hf_hidden(ref, padded([49406, 320, 49408, 49407], 49407))[1]
    z_empty = hf_hidden(ref, padded([49406, 49407], 49407))[1]
    w = torch.tensor(window.weights)[None, :, None]
    close(cond, (z - z_empty) * w + z_empty)


def test_sdxl_dual_embedding(folder, tok):
    clip_l = hf_model(32, 2, 2, seed=22)
    osd = openclip_state(64, 3, 16, seed=23)
    state = {**prefixed(hf_layout_state(clip_l), "conditioner.embedders.0.transformer."),
             **prefixed(osd, "conditioner.embedders.1.model.")}
    v_l, v_g = torch.randn(2, 32), torch.randn(2, 64)
    save_file({"clip_l": v_l, "clip_g": v_g}, str(folder / "xl.safetensors"))
    stack = ClipTextStack.from_checkpoint(state, num_heads={"clip_l": 2, "clip_g": None},
                                          embeddings=EmbeddingLibrary(directory_finder(str(folder))))
    cond, pooled = stack.encode("cat embedding:xl")
    plain, _ = stack.encode("cat xl")
    assert (cond - plain).abs().max() > 1e-2
    ids = [49406, 2368, 49408, 49409, 49407]
    hs_l = hf_hidden(with_extra_tokens(clip_l, v_l), padded(ids, 49407))[0]
    close(cond[..., :32], hs_l[-2])
    g_ids = torch.tensor(padded([49406, 2368, 0, 0, 49407], 0))
    states, _, ref_pooled = openclip_reference(osd, g_ids, heads=1, inject={(0, 2): v_g[0], (0, 3): v_g[1]})
    close(cond[..., 32:], states[-2])
    close(pooled, ref_pooled)


# -- errors and warnings ------------------------------------------------------------------------------------------------
def test_missing_embedding_warns_and_drops_word(folder, sd1_model):
    stack = sd1_stack(sd1_model, folder)
    warnings = []
    cond, _ = stack.encode("a photo of embedding:nowhere cat", warnings=warnings)
    assert len(warnings) == 1 and "nowhere" in warnings[0]
    expected, _ = stack.encode("a photo of cat")
    close(cond, expected, 0)


def test_sdxl_embedding_on_sd1_is_an_error_naming_the_file(folder, sd1_model):
    save_file({"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 64)}, str(folder / "xlonly.safetensors"))
    stack = sd1_stack(sd1_model, folder)
    with pytest.raises(EmbeddingError, match="xlonly.safetensors"):
        stack.encode("embedding:xlonly")


def test_width_mismatch_is_an_error_naming_the_file(folder):
    save_file({"emb_params": torch.randn(1, 768)}, str(folder / "sd1style.safetensors"))
    osd = openclip_state(64, 2, 16, seed=24)
    stack = ClipTextStack.from_checkpoint(prefixed(osd, "cond_stage_model.model."),
                                          embeddings=EmbeddingLibrary(directory_finder(str(folder))))
    with pytest.raises(EmbeddingError, match="sd1style.safetensors.*768.*64"):
        stack.encode("embedding:sd1style")


def test_single_encoder_embedding_on_sdxl_is_an_error(folder):
    clip_l = hf_model(32, 2, 2, seed=25)
    osd = openclip_state(64, 2, 16, seed=26)
    state = {**prefixed(hf_layout_state(clip_l), "conditioner.embedders.0.transformer."),
             **prefixed(osd, "conditioner.embedders.1.model.")}
    save_file({"emb_params": torch.randn(1, 32)}, str(folder / "small.safetensors"))
    stack = ClipTextStack.from_checkpoint(state, num_heads={"clip_l": 2, "clip_g": None},
                                          embeddings=EmbeddingLibrary(directory_finder(str(folder))))
    with pytest.raises(EmbeddingError, match="small.safetensors.*clip_g"):
        stack.encode("embedding:small")


# -- finding files ------------------------------------------------------------------------------------------------------
def test_embedding_finder_over_a_listing():
    names = ["style.safetensors", "style.pt", "sub/deep.pt", "a/dup.pt", "b/dup.pt", "notes.txt"]
    find = embedding_finder(lambda: names, lambda n: "/root/" + n)
    assert find("style") == "/root/style.safetensors"
    assert find("style.pt") == "/root/style.pt"
    assert find("sub/deep") == "/root/sub/deep.pt"
    assert find("deep") == "/root/sub/deep.pt"
    assert find("dup") is None  # ambiguous
    assert find("notes") is None and find("nothing") is None and find("") is None


def test_directory_finder_stays_inside(tmp_path):
    inner = tmp_path / "emb"
    inner.mkdir()
    torch.save(torch.zeros(1, 4), str(tmp_path / "outside.pt"))
    torch.save(torch.zeros(1, 4), str(inner / "inside.pt"))
    find = directory_finder(str(inner))
    assert find("inside") == os.path.realpath(str(inner / "inside.pt"))
    assert find("../outside") is None and find("../outside.pt") is None


def test_library_reloads_changed_file(folder):
    path = folder / "s.safetensors"
    save_file({"emb_params": torch.zeros(1, 4)}, str(path))
    lib = EmbeddingLibrary(directory_finder(str(folder)))
    assert lib.vectors_for("s", "clip_l", 4, False).sum() == 0
    save_file({"emb_params": torch.ones(2, 4)}, str(path))
    os.utime(path, (1, 1))
    assert lib.vectors_for("s", "clip_l", 4, False).shape == (2, 4)
