"""EXR files of SaveImageAdvanced, read back by the OpenEXR library itself: float pixels unchanged, sRGB and HLG
input linearised by their published curves, alpha untouched, the workflow and chromaticities in the header."""
import json

import numpy as np
import OpenEXR
import pytest

from nodes.exr_format import CHROMATICITIES, encode_exr, hlg_to_linear, read_header, srgb_to_linear


def read(tmp_path, data):
    path = tmp_path / "image.exr"
    path.write_bytes(data)
    return OpenEXR.File(str(path))


def test_linear_input_is_written_bit_for_bit_with_the_workflow(tmp_path):
    pixels = np.random.default_rng(0).normal(0.5, 1.0, (7, 5, 3)).astype(np.float32)  # HDR values and negatives
    metadata = {"prompt": {"3": {"class_type": "KSampler"}}, "workflow": {"nodes": [], "version": 0.4}}
    exr = read(tmp_path, encode_exr(pixels, "linear", metadata))
    assert np.array_equal(exr.channels()["RGB"].pixels, pixels)
    header = exr.header()
    assert json.loads(header["prompt"]) == metadata["prompt"]
    assert json.loads(header["workflow"]) == metadata["workflow"]
    primaries = header["chromaticities"]
    assert np.allclose(np.array(primaries, dtype=np.float64).ravel(), CHROMATICITIES["Rec.709"], atol=1e-6)


def test_srgb_input_is_linearised_and_alpha_is_not(tmp_path):
    values = np.array([0.0, 0.02, 0.04045, 0.5, 1.0], dtype=np.float32)
    pixels = np.stack([values] * 3 + [values[::-1]], axis=-1)[None]  # [1, 5, 4]: RGBA
    exr = read(tmp_path, encode_exr(pixels, "sRGB"))
    rgba = exr.channels()["RGBA"].pixels
    expected = [0.0, 0.02 / 12.92, 0.04045 / 12.92, (0.555 / 1.055) ** 2.4, 1.0]
    assert np.allclose(rgba[0, :, 0], expected, rtol=1e-5, atol=1e-7)
    assert np.array_equal(rgba[0, :, 3], values[::-1])


def test_hlg_curve_and_rec2020_primaries(tmp_path):
    assert np.allclose(hlg_to_linear(np.array([0.0, 0.25, 0.5, 1.0])), [0.0, 0.0625 / 3, 1 / 12, 1.0], atol=1e-6)
    assert np.allclose(srgb_to_linear(np.array([0.0, 1.0])), [0.0, 1.0])
    exr = read(tmp_path, encode_exr(np.full((2, 3, 3), 0.75, np.float32), "HDR"))
    primaries = np.array(exr.header()["chromaticities"], dtype=np.float64).ravel()
    assert np.allclose(primaries, CHROMATICITIES["Rec.2020"], atol=1e-6)
    assert np.allclose(exr.channels()["RGB"].pixels, hlg_to_linear(np.array([0.75]))[0], rtol=1e-6)


def test_greyscale_is_a_y_channel_and_long_keys_set_the_long_names_flag(tmp_path):
    pixels = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4, 1)
    key = "a_pack_key_that_is_longer_than_thirty_one_bytes"
    data = encode_exr(pixels, "linear", {key: {"x": 1}})
    assert int.from_bytes(data[4:8], "little") & 0x400
    exr = read(tmp_path, data)
    assert np.array_equal(exr.channels()["Y"].pixels, pixels[..., 0])
    assert json.loads(exr.header()[key]) == {"x": 1}
    names = [name for name, _, _ in read_header(data)[0]]
    assert names.count(key) == 1 and "dataWindow" in names


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="input_color_space 'P3'"):
        encode_exr(np.zeros((2, 2, 3), np.float32), "P3")
    with pytest.raises(ValueError, match="2 channels"):
        encode_exr(np.zeros((2, 2, 2), np.float32), "linear")
