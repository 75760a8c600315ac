"""Output files from workers landed in the front's folders (scaleout/landing.py): SaveImage's counter continues
from what the front's folder holds, other taken names get a suffix, nothing lands outside the folder, and the new
names reach the ui outputs."""
import pytest

from scaleout.landing import OutputLanding, UnsafeFileName, apply_renames


def landing(tmp_path):
    (tmp_path / "out").mkdir()
    return OutputLanding({"output": str(tmp_path / "out"), "temp": str(tmp_path / "tmp")})


def test_counted_names_continue_the_fronts_counter(tmp_path):
    land = landing(tmp_path)
    assert land.land({("output", "", "img_00001_.png"): b"a", ("output", "", "img_00002_.png"): b"b"}) == {}
    renames = land.land({("output", "", "img_00001_.png"): b"c", ("output", "", "img_00002_.png"): b"d"})
    assert renames == {("output", "", "img_00001_.png"): "img_00003_.png",
                       ("output", "", "img_00002_.png"): "img_00004_.png"}
    assert (tmp_path / "out" / "img_00004_.png").read_bytes() == b"d"
    assert (tmp_path / "out" / "img_00001_.png").read_bytes() == b"a"  # never overwritten
    assert land.land({("output", "", "other_00001_.png"): b"e"}) == {}  # another prefix counts on its own


def test_other_taken_names_get_a_suffix_and_subfolders_are_kept(tmp_path):
    land = landing(tmp_path)
    land.land({("temp", "sub", "mesh.glb"): b"1"})
    assert land.land({("temp", "sub", "mesh.glb"): b"2"}) == {("temp", "sub", "mesh.glb"): "mesh_1.glb"}
    assert (tmp_path / "tmp" / "sub" / "mesh_1.glb").read_bytes() == b"2"


@pytest.mark.parametrize("key", [("output", "../escape", "a.png"), ("output", "", "../a.png"),
                                 ("output", "/etc", "a.png")])
def test_nothing_lands_outside_the_folder(tmp_path, key):
    with pytest.raises(UnsafeFileName):
        landing(tmp_path).land({key: b"x"})
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a.png").exists()


def test_renames_reach_every_file_entry_of_the_outputs():
    outputs = {"9": {"images": [{"filename": "img_00001_.png", "subfolder": "", "type": "output"},
                                {"filename": "img_00001_.png", "subfolder": "", "type": "input"}]}}
    apply_renames(outputs, {("output", "", "img_00001_.png"): "img_00007_.png"})
    assert [i["filename"] for i in outputs["9"]["images"]] == ["img_00007_.png", "img_00001_.png"]


def test_a_staged_file_is_moved_into_place_under_a_free_name(tmp_path):
    staging = tmp_path / "staging" / "worker-0" / "output"
    staging.mkdir(parents=True)
    land = OutputLanding({"output": str(tmp_path / "out"), "temp": str(tmp_path / "tmp")},
                         staging_root=str(tmp_path / "staging"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "img_00001_.png").write_bytes(b"old")
    (staging / "img_00001_.png").write_bytes(b"new")
    renames = land.land({("output", "", "img_00001_.png"): str(staging / "img_00001_.png")})
    assert renames == {("output", "", "img_00001_.png"): "img_00002_.png"}
    assert (tmp_path / "out" / "img_00002_.png").read_bytes() == b"new"
    assert (tmp_path / "out" / "img_00001_.png").read_bytes() == b"old"
    assert not (staging / "img_00001_.png").exists()  # moved, not copied


def test_a_staged_path_outside_staging_or_missing_is_refused_clearly(tmp_path):
    from scaleout.landing import StagedFileMissing
    (tmp_path / "staging").mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"s")
    land = OutputLanding({"output": str(tmp_path / "out")}, staging_root=str(tmp_path / "staging"))
    with pytest.raises(UnsafeFileName):
        land.land({("output", "", "a.txt"): str(secret)})
    assert secret.exists()
    with pytest.raises(StagedFileMissing, match="mounts at the same path"):
        land.land({("output", "", "a.txt"): str(tmp_path / "staging" / "gone.txt")})
    with pytest.raises(UnsafeFileName):  # without --shared-output no path is accepted at all
        OutputLanding({"output": str(tmp_path / "out")}).land({("output", "", "a.txt"): str(secret)})
