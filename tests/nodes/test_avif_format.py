"""AVIF files of SaveImageAdvanced, decoded by libavif (through Pillow): stills and animations, 8 and 10 bits,
the workflow as an Exif item of the primary image in ComfyUI's tag layout."""
import json

import numpy as np
import pytest
from PIL import Image

from nodes.avif_format import add_exif, exif_payload, write_avif


def flat_image(value, height=32, width=48, frames=1):
    return np.full((frames, height, width, 3), value, dtype=np.float32)


def test_a_still_decodes_to_the_image_and_carries_the_workflow(tmp_path):
    path = tmp_path / "still.avif"
    image = flat_image(0.2)
    image[:, :, 24:] = (0.9, 0.5, 0.1)
    write_avif(str(path), image)
    metadata = {"prompt": {"9": {"class_type": "SaveImageAdvanced"}}, "workflow": {"nodes": [1]}, "extra": [2]}
    path.write_bytes(add_exif(path.read_bytes(), metadata))
    decoded = Image.open(path)
    assert decoded.size == (48, 32)
    pixels = np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255
    assert np.abs(pixels[4:-4, 4:20] - 0.2).max() < 0.02  # crf 18: near-lossless on flat areas
    assert np.abs(pixels[4:-4, 28:44] - (0.9, 0.5, 0.1)).max() < 0.03
    exif = decoded.getexif()
    assert exif[0x0110] == "prompt:" + json.dumps(metadata["prompt"])
    assert exif[0x010F] == "workflow:" + json.dumps(metadata["workflow"])
    assert exif[0x010E] == "extra:" + json.dumps([2])


def test_an_animation_keeps_its_frames_when_the_exif_item_is_added(tmp_path):
    rng = np.random.default_rng(1)
    frames = np.concatenate([flat_image(v) for v in (0.1, 0.5, 0.9)]) + rng.uniform(0, 0.05, (3, 32, 48, 3))
    plain, tagged = tmp_path / "plain.avif", tmp_path / "tagged.avif"
    write_avif(str(plain), frames.astype(np.float32), fps=6.0, loop_count=0)
    data = plain.read_bytes()
    metadata = {"prompt": {"1": {}}, "workflow": {"links": []}}
    tagged.write_bytes(add_exif(data, metadata))
    assert tagged.read_bytes().endswith(exif_payload(metadata))  # appended to mdat, every offset moved
    before, after = Image.open(plain), Image.open(tagged)
    assert before.n_frames == after.n_frames == 3
    for index in range(3):
        before.seek(index)
        after.seek(index)
        a, b = np.asarray(before.convert("RGB")), np.asarray(after.convert("RGB"))
        assert np.array_equal(a, b)
        assert abs(a.mean() / 255 - (0.1, 0.5, 0.9)[index] - 0.025) < 0.03


def test_ten_bit_hdr_and_greyscale_decode(tmp_path):
    hdr = tmp_path / "hdr.avif"
    write_avif(str(hdr), flat_image(0.6), bit_depth="auto", color_space="HDR")
    assert np.abs(np.asarray(Image.open(hdr).convert("RGB"), dtype=np.float32) / 255 - 0.6).max() < 0.03
    grey = tmp_path / "grey.avif"
    write_avif(str(grey), np.full((1, 16, 16, 1), 0.3, np.float32), bit_depth="8-bit YUV420")
    assert np.abs(np.asarray(Image.open(grey).convert("L"), dtype=np.float32) / 255 - 0.3).max() < 0.03


def test_crf_trades_size_for_quality(tmp_path):
    noisy = np.random.default_rng(2).uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    sizes = {}
    for crf in (4, 50):
        path = tmp_path / f"crf{crf}.avif"
        write_avif(str(path), noisy, crf=crf)
        sizes[crf] = path.stat().st_size
    assert sizes[50] < sizes[4] / 2


def test_alpha_and_unknown_options_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="4 channels"):
        write_avif(str(tmp_path / "a.avif"), np.zeros((1, 8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="input_color_space 'P3'"):
        write_avif(str(tmp_path / "b.avif"), flat_image(0.5), color_space="P3")
    with pytest.raises(ValueError, match="bit_depth '12-bit'"):
        write_avif(str(tmp_path / "c.avif"), flat_image(0.5), bit_depth="12-bit")


def test_a_refused_image_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        write_avif(str(tmp_path / "rgba.avif"), np.zeros((1, 8, 8, 4), np.float32))
    assert not (tmp_path / "rgba.avif").exists()
