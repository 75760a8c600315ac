"""`import folder_paths` against real temporary folders: listings are live, names stay inside their folders, and
the module follows whatever Services is bound."""
import os
import sys

import pytest

import compat
from compat import _runtime
from model_management.services import Services
from model_management.paths import PathError


@pytest.fixture
def fp(bound):
    import folder_paths
    return folder_paths


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def test_install_is_idempotent(bound):
    services, catalogue = bound
    compat.install(services, catalogue)
    assert sys.path.count(compat.COMPAT_DIR) == 1 and compat.installed()


def test_directories_and_attributes_follow_the_binding(fp, bound, tmp_path):
    paths = bound[0].paths
    assert fp.get_input_directory() == paths.input_dir
    assert fp.get_output_directory() == paths.output_dir
    assert fp.get_temp_directory() == paths.temp_dir
    assert fp.get_user_directory() == paths.user_dir
    assert fp.models_dir == paths.models_dir and fp.base_path == paths.base_dir
    assert fp.get_directory_by_type("temp") == paths.temp_dir and fp.get_directory_by_type("nope") is None
    other = Services.for_directory(str(tmp_path / "other"))
    compat.install(other, bound[1])
    assert fp.models_dir == other.paths.models_dir
    assert fp.get_output_directory() == other.paths.output_dir


def test_unbound_calls_fail_clearly(fp):
    _runtime.unbind()
    with pytest.raises(RuntimeError, match="compat.install"):
        fp.get_input_directory()


def test_new_model_file_appears_without_restart(fp, bound):
    models = bound[0].paths.models_dir
    assert fp.get_filename_list("checkpoints") == []
    touch(os.path.join(models, "checkpoints", "a.safetensors"))
    touch(os.path.join(models, "checkpoints", "sub", "b.ckpt"))
    touch(os.path.join(models, "checkpoints", "notes.txt"))
    assert fp.get_filename_list("checkpoints") == ["a.safetensors", "sub/b.ckpt"]
    assert fp.get_full_path("checkpoints", "sub/b.ckpt") == os.path.realpath(
        os.path.join(models, "checkpoints", "sub", "b.ckpt"))
    assert fp.get_full_path("checkpoints", "missing.safetensors") is None
    assert fp.get_full_path("checkpoints", "../vae/x.safetensors") is None
    with pytest.raises(FileNotFoundError):
        fp.get_full_path_or_raise("checkpoints", "missing.safetensors")
    assert fp.get_folder_paths("checkpoints") == [os.path.join(models, "checkpoints")]
    assert fp.get_filename_list("no_such_kind") == []


def test_registering_folders_like_packs_do(fp, bound, tmp_path):
    extra = tmp_path / "extra_ckpts"
    touch(str(extra / "c.safetensors"))
    fp.add_model_folder_path("checkpoints", str(extra))
    assert "c.safetensors" in fp.get_filename_list("checkpoints")

    own = tmp_path / "detectors"
    touch(str(own / "face.onnx"))
    fp.add_model_folder_path("ultralytics", str(own))  # a new kind lists every file
    assert fp.get_filename_list("ultralytics") == ["face.onnx"]

    gguf = tmp_path / "gguf"
    touch(str(gguf / "m.gguf"))
    touch(str(gguf / "m.txt"))
    fp.folder_names_and_paths["unet_gguf"] = ([str(gguf)], {".gguf"})
    assert fp.get_filename_list("unet_gguf") == ["m.gguf"]
    assert "unet_gguf" in fp.folder_names_and_paths

    paths_list, extensions = fp.folder_names_and_paths["vae"]
    extensions.add(".gguf")
    paths_list.append(str(gguf))
    assert fp.get_filename_list("vae") == ["m.gguf"]
    assert ".safetensors" in fp.supported_pt_extensions


def test_comfyui_kinds_beyond_models(fp, bound):
    services, _ = bound
    # the custom node folders are a kind, backed by the very list the server loads packs from
    dirs, extensions = fp.folder_names_and_paths["custom_nodes"]
    assert dirs is services.paths.custom_node_dirs and extensions == set()
    touch(os.path.join(dirs[0], "my_pack", "__init__.py"))
    assert fp.get_filename_list("custom_nodes") == [os.path.join("my_pack", "__init__.py")]
    for kind in ("diffusers", "model_patches", "audio_encoders", "classifiers"):
        assert kind in fp.folder_names_and_paths and os.path.isdir(fp.get_folder_paths(kind)[0])
    # a diffusers pipeline is a folder: found by path, never listed as a file
    touch(os.path.join(fp.get_folder_paths("diffusers")[0], "pipe", "model_index.json"))
    assert fp.get_filename_list("diffusers") == []


def test_annotated_paths(fp, bound):
    paths = bound[0].paths
    assert fp.get_annotated_filepath("x.png [output]") == os.path.join(os.path.realpath(paths.output_dir), "x.png")
    assert fp.get_annotated_filepath("x.png") == os.path.join(os.path.realpath(paths.input_dir), "x.png")
    assert fp.get_annotated_filepath("x.png", paths.temp_dir) == os.path.join(os.path.realpath(paths.temp_dir),
                                                                               "x.png")
    assert fp.annotated_filepath("y.png [temp]") == ("y.png", paths.temp_dir)
    assert not fp.exists_annotated_filepath("x.png")
    touch(os.path.join(paths.input_dir, "x.png"))
    assert fp.exists_annotated_filepath("x.png")
    with pytest.raises(PathError):
        fp.get_annotated_filepath("../../etc/passwd")
    assert not fp.exists_annotated_filepath("../../etc/passwd")


def test_save_image_path(fp, bound):
    out = fp.get_output_directory()
    folder, filename, counter, subfolder, prefix = fp.get_save_image_path("portraits/cat", out, 64, 32)
    assert (filename, counter, subfolder, prefix) == ("cat", 1, "portraits", "portraits/cat")
    assert folder == os.path.join(os.path.realpath(out), "portraits") and os.path.isdir(folder)
    touch(os.path.join(folder, "cat_00001_.png"))
    assert fp.get_save_image_path("portraits/cat", out)[2] == 2
    assert fp.get_save_image_path("img_%width%x%height%", out, 64, 32)[1] == "img_64x32"
    temp = fp.get_temp_directory()
    assert fp.get_save_image_path("t", temp)[0] == os.path.realpath(temp)
    with pytest.raises(PathError):
        fp.get_save_image_path("../escape", out)


def test_filter_and_search(fp, tmp_path):
    assert fp.filter_files_extensions(["b.PT", "a.safetensors", "c.txt"], {".pt", ".safetensors"}) == [
        "a.safetensors", "b.PT"]
    assert fp.filter_files_extensions(["b", "a"], set()) == ["a", "b"]
    touch(str(tmp_path / "tree" / "d" / "f.bin"))
    files, dirs = fp.recursive_search(str(tmp_path / "tree"))
    assert files == ["d/f.bin"] and str(tmp_path / "tree" / "d") in dirs
