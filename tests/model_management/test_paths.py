"""model_management/paths.py: folders, listings, safe name resolution, the model-paths YAML and save_path."""
import os
import textwrap

import pytest

from model_management.paths import DEFAULT_MODEL_KINDS, PathError, Paths, safe_join


def touch(*parts):
    path = os.path.join(*parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x")
    return path


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path / "base"))


# -- folders -------------------------------------------------------------------------------------------------

def test_default_folders_are_created(tmp_path):
    base = tmp_path / "base"
    paths = Paths(str(base))
    for name in ("output", "input", "temp", "user"):
        assert (base / name).is_dir()
        assert os.path.isabs(getattr(paths, f"{name}_dir"))
    for sub, _ in DEFAULT_MODEL_KINDS.values():
        assert (base / "models" / sub).is_dir()
    assert paths.folder_paths("checkpoints") == [str(base / "models" / "checkpoints")]
    assert paths.custom_node_dirs == [str(base / "custom_nodes")] and (base / "custom_nodes").is_dir()


def test_create_false_touches_nothing_and_overrides_are_used(tmp_path):
    paths = Paths(str(tmp_path / "base"), output_dir=str(tmp_path / "out"), create=False)
    assert paths.output_dir == str(tmp_path / "out")
    assert not (tmp_path / "base").exists() and not (tmp_path / "out").exists()
    assert paths.list_files("checkpoints") == [] and paths.full_path("checkpoints", "a.ckpt") is None


def test_directory_for_and_annotations(paths):
    assert paths.directory_for("temp") == paths.temp_dir
    with pytest.raises(PathError):
        paths.directory_for("models")
    assert paths.annotated("a b.png [output]") == (paths.output_dir, "a b.png")
    assert paths.annotated("a.png [temp]", "output") == (paths.temp_dir, "a.png")
    assert paths.annotated("a.png [models]") == (paths.input_dir, "a.png [models]")
    assert paths.annotated("a.png", "output") == (paths.output_dir, "a.png")
    assert paths.annotated_path("sub/a.png [output]") == os.path.join(os.path.realpath(paths.output_dir),
                                                                      "sub", "a.png")
    with pytest.raises(PathError):
        paths.annotated_path("../a.png [output]")


def test_text_encoders_and_clip_share_one_folder_list(paths, tmp_path):
    assert paths.folder_paths("text_encoders") == paths.folder_paths("clip")
    assert paths.folder_paths("diffusion_models") == paths.folder_paths("unet")
    assert len(paths.folder_paths("clip")) == 2
    paths.add_model_folder("text_encoders", str(tmp_path / "more"))
    assert paths.folder_paths("clip")[-1] == str(tmp_path / "more")
    touch(paths.folder_paths("text_encoders")[1], "t5.safetensors")
    touch(paths.folder_paths("clip")[0], "l.safetensors")
    assert paths.list_files("clip") == paths.list_files("text_encoders") == ["l.safetensors", "t5.safetensors"]
    touch(paths.folder_paths("unet")[0], "u.sft")
    assert paths.full_path("diffusion_models", "u.sft") is not None


# -- listings ------------------------------------------------------------------------------------------------

def test_list_files_recursive_filtered_hidden_skipped_and_fresh(paths):
    root = paths.folder_paths("checkpoints")[0]
    touch(root, "b.safetensors")
    touch(root, "sd15", "deep", "a.ckpt")
    touch(root, "notes.txt")
    touch(root, "UPPER.SAFETENSORS")
    touch(root, ".hidden.safetensors")
    touch(root, ".cache", "x.safetensors")
    assert paths.list_files("checkpoints") == ["UPPER.SAFETENSORS", "b.safetensors", "sd15/deep/a.ckpt"]
    touch(root, "new.pth")  # no refresh call needed
    assert "new.pth" in paths.list_files("checkpoints")
    os.remove(os.path.join(root, "b.safetensors"))
    assert "b.safetensors" not in paths.list_files("checkpoints")
    assert paths.list_files("no_such_kind") == []


def test_list_files_merges_folders_and_uses_kind_extensions(paths, tmp_path):
    extra = str(tmp_path / "extra")
    paths.add_model_folder("checkpoints", extra)
    touch(paths.folder_paths("checkpoints")[0], "same.safetensors")
    touch(extra, "same.safetensors")
    touch(extra, "other.bin")
    assert paths.list_files("checkpoints") == ["other.bin", "same.safetensors"]
    touch(paths.folder_paths("configs")[0], "v1.yaml")
    touch(paths.folder_paths("configs")[0], "v1.ckpt")
    assert paths.list_files("configs") == ["v1.yaml"]


def test_list_files_survives_symlink_cycles(paths):
    root = paths.folder_paths("loras")[0]
    touch(root, "sub", "a.safetensors")
    os.symlink(root, os.path.join(root, "sub", "back"))
    assert paths.list_files("loras") == ["sub/a.safetensors"]


def test_list_input_images(paths):
    touch(paths.input_dir, "a.png")
    touch(paths.input_dir, "sub", "b.JPG")
    touch(paths.input_dir, "clipspace", "c.png")
    touch(paths.input_dir, "doc.txt")
    assert paths.list_input_images() == ["a.png", "sub/b.JPG"]


# -- resolving names -----------------------------------------------------------------------------------------

def test_full_path_and_require(paths, tmp_path):
    second = str(tmp_path / "second")
    paths.add_model_folder("vae", second)
    touch(second, "only_here.safetensors")
    found = touch(paths.folder_paths("vae")[0], "sub", "v.safetensors")
    assert paths.full_path("vae", "sub/v.safetensors") == os.path.realpath(found)
    assert paths.full_path("vae", "only_here.safetensors") == os.path.realpath(
        os.path.join(second, "only_here.safetensors"))
    assert paths.full_path("vae", "missing.safetensors") is None
    assert paths.full_path("vae", "sub") is None  # a folder is not a model file
    assert paths.full_path("nope", "v.safetensors") is None
    assert paths.full_path("vae", "") is None and paths.full_path("vae", None) is None
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        paths.require("vae", "missing.safetensors")


def test_full_path_refuses_names_that_leave_the_folder(paths, tmp_path):
    secret = touch(str(tmp_path), "secret.safetensors")
    root = paths.folder_paths("checkpoints")[0]
    for name in ("../../../secret.safetensors", "../checkpoints/../../../secret.safetensors", secret,
                 "a\x00.safetensors"):
        assert paths.full_path("checkpoints", name) is None, name


def test_symlinks_the_user_placed_in_a_model_folder_are_followed(paths, tmp_path):
    """Models kept on another disk and linked into models/ are a common setup: listed and loadable alike."""
    other_disk = tmp_path / "other_disk"
    other_disk.mkdir()
    secret = touch(str(other_disk), "big.safetensors")
    root = paths.folder_paths("checkpoints")[0]
    os.symlink(secret, os.path.join(root, "link.safetensors"))
    os.symlink(str(other_disk), os.path.join(root, "dirlink"))
    assert "link.safetensors" in paths.list_files("checkpoints")
    assert "dirlink/big.safetensors" in paths.list_files("checkpoints")
    assert os.path.realpath(paths.full_path("checkpoints", "link.safetensors")) == os.path.realpath(secret)
    assert paths.full_path("checkpoints", "dirlink/big.safetensors") is not None


def test_symlinks_inside_the_folder_are_fine(paths):
    root = paths.folder_paths("checkpoints")[0]
    target = touch(root, "real", "m.safetensors")
    os.symlink(target, os.path.join(root, "alias.safetensors"))
    assert os.path.realpath(paths.full_path("checkpoints", "alias.safetensors")) == os.path.realpath(target)


def test_safe_join(tmp_path):
    root = str(tmp_path)
    assert safe_join(root, "a", "b.png") == os.path.join(os.path.realpath(root), "a", "b.png")
    assert safe_join(root, "a/../b.png") == os.path.join(os.path.realpath(root), "b.png")
    assert safe_join(root) == os.path.realpath(root)
    for bad in (("..",), ("../x",), ("/etc/passwd",), ("a", "/etc"), ("x\x00y",), (None,)):
        with pytest.raises(PathError):
            safe_join(root, *bad)
    (tmp_path / "rootsib").mkdir()  # a sibling whose name starts with the root's name is still outside
    with pytest.raises(PathError):
        safe_join(str(tmp_path / "root"), "../rootsib/x")


# -- model-paths YAML ----------------------------------------------------------------------------------------

def write_yaml(directory, text):
    path = os.path.join(directory, "extra_model_paths.yaml")
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text))
    return path


def test_load_model_paths_yaml_sections_bases_and_multiline(paths, tmp_path):
    conf_dir = str(tmp_path / "conf")
    yaml_path = write_yaml(conf_dir, f"""
        comfy:
          base_path: ../comfy
          checkpoints: models/checkpoints
          loras: |
            models/loras
            models/lycoris
          text_encoders: models/text_encoders
          custom_nodes: custom_nodes
        other:
          base_path: {tmp_path / "abs"}
          vae: vae
          controlnet: /elsewhere/cn
          upscale_models:
            - esrgan
            - swin
        nobase:
          embeddings: emb
        """)
    paths.load_model_paths_yaml(yaml_path)
    comfy = str(tmp_path / "comfy")
    default = os.path.join(paths.models_dir, "{}")
    assert paths.folder_paths("checkpoints") == [default.format("checkpoints"),
                                                 os.path.join(comfy, "models", "checkpoints")]
    assert paths.folder_paths("loras") == [default.format("loras"), os.path.join(comfy, "models", "loras"),
                                           os.path.join(comfy, "models", "lycoris")]
    assert paths.folder_paths("clip")[-1] == os.path.join(comfy, "models", "text_encoders")
    assert paths.folder_paths("vae")[-1] == str(tmp_path / "abs" / "vae")
    assert paths.folder_paths("controlnet")[-1] == "/elsewhere/cn"
    assert paths.folder_paths("upscale_models")[-2:] == [str(tmp_path / "abs" / "esrgan"),
                                                         str(tmp_path / "abs" / "swin")]
    assert paths.folder_paths("embeddings")[-1] == os.path.join(conf_dir, "emb")  # no base: the YAML's folder
    assert paths.custom_node_dirs[-1] == os.path.join(comfy, "custom_nodes")
    touch(comfy, "models", "lycoris", "style.safetensors")
    assert paths.list_files("loras") == ["style.safetensors"]
    assert paths.full_path("loras", "style.safetensors").endswith("lycoris/style.safetensors")


def test_is_default_sections_go_first_in_their_own_order(paths, tmp_path):
    yaml_path = write_yaml(str(tmp_path), """
        shared:
          base_path: shared
          is_default: true
          checkpoints: |
            first
            second
        late:
          base_path: late
          checkpoints: third
        """)
    paths.load_model_paths_yaml(yaml_path)
    assert paths.folder_paths("checkpoints") == [str(tmp_path / "shared" / "first"),
                                                 str(tmp_path / "shared" / "second"),
                                                 os.path.join(paths.models_dir, "checkpoints"),
                                                 str(tmp_path / "late" / "third")]
    # the first default folder wins when two folders hold the same name
    winner = touch(str(tmp_path / "shared" / "first"), "m.safetensors")
    touch(paths.models_dir, "checkpoints", "m.safetensors")
    assert paths.full_path("checkpoints", "m.safetensors") == os.path.realpath(winner)


def test_yaml_new_kinds_repeats_and_bad_files(paths, tmp_path):
    yaml_path = write_yaml(str(tmp_path), """
        a:
          checkpoints: dup
          my_kind: mine
          empty:
        b:
          is_default: true
          checkpoints: dup
        ignored: just a string
        """)
    paths.load_model_paths_yaml(yaml_path)
    assert paths.folder_paths("my_kind") == [str(tmp_path / "mine")]
    assert paths.folder_paths("checkpoints")[0] == str(tmp_path / "dup")  # re-added as default: moved, not doubled
    assert paths.folder_paths("checkpoints").count(str(tmp_path / "dup")) == 1
    with pytest.raises(KeyError):
        paths.folder_paths("empty")
    bad = write_yaml(str(tmp_path / "bad"), "- a\n- b\n")
    with pytest.raises(ValueError, match="named sections"):
        paths.load_model_paths_yaml(bad)
    empty = write_yaml(str(tmp_path / "empty"), "")
    paths.load_model_paths_yaml(empty)  # an empty file adds nothing


# -- save_path -----------------------------------------------------------------------------------------------

def test_save_path_counters(paths):
    folder, base, counter, subfolder = paths.save_path("img")
    assert (folder, base, counter, subfolder) == (os.path.realpath(paths.output_dir), "img", 1, "")
    touch(folder, "img_00001_.png")
    touch(folder, "img_00041_.webp")
    touch(folder, "img_00007.png")
    touch(folder, "img_extra_00099_.png")  # another prefix that starts the same
    touch(folder, "image_00500_.png")
    assert paths.save_path("img")[2] == 42
    assert paths.save_path("img_extra")[2] == 100
    assert paths.save_path("other")[2] == 1


def test_save_path_subfolders_and_placeholders(paths):
    folder, base, counter, subfolder = paths.save_path("a/b/c", "output", 640, 480)
    assert folder == os.path.join(os.path.realpath(paths.output_dir), "a", "b") and os.path.isdir(folder)
    assert (base, counter, subfolder) == ("c", 1, "a/b")
    folder, base, _, subfolder = paths.save_path("%width%x%height%/shot_%width%", "temp", 640, 480)
    assert folder == os.path.join(os.path.realpath(paths.temp_dir), "640x480")
    assert (base, subfolder) == ("shot_640", "640x480")
    _, base, _, _ = paths.save_path("d_%year%-%month%-%day%_%hour%%minute%%second%")
    assert len(base) == len("d_2024-01-01_000000") and "%" not in base
    assert paths.save_path("")[1]  # an empty prefix still names a file


@pytest.mark.parametrize("prefix", ["../x", "a/../../x", "/abs/x", "..", ".", "a/.."])
def test_save_path_refuses_prefixes_outside(paths, prefix):
    with pytest.raises(PathError):
        paths.save_path(prefix)


def test_save_path_unknown_folder_type(paths):
    with pytest.raises(PathError):
        paths.save_path("x", "models")
