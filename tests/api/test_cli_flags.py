"""Server command-line flags that change folders, packs and caching."""
import os

from tests.server_harness import ServerProcess, simple_prompt


def test_folder_flags_model_paths_yaml_and_disabled_packs(tmp_path):
    other = tmp_path / "elsewhere"
    (other / "ckpts").mkdir(parents=True)
    (other / "ckpts" / "model.safetensors").write_bytes(b"x")
    yaml_path = tmp_path / "extra_model_paths.yaml"
    yaml_path.write_text("mine:\n  base_path: elsewhere\n  checkpoints: ckpts\n")
    out_dir, in_dir = tmp_path / "out", tmp_path / "in"
    server = ServerProcess(tmp_path / "base", ["--extra-model-paths-config", str(yaml_path),
                                               "--output-directory", str(out_dir), "--input-directory", str(in_dir),
                                               "--disable-all-custom-nodes", "--cache-lru", "2"]).start()
    try:
        assert server.json("GET", "/models/checkpoints") == (200, ["model.safetensors"])
        status, stats = server.json("GET", "/system_stats")
        assert stats["custom_nodes"]["loaded"] == [] and stats["custom_nodes"]["failed"] == []
        assert server.json("GET", "/object_info/SlowCount")[0] == 404
        wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 9}},
              "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "flag"}}}
        _, body = server.post_prompt(wf)
        entry = server.wait_history(body["prompt_id"])
        name = entry["outputs"]["2"]["images"][0]["filename"]
        assert os.path.isfile(out_dir / name)
        assert os.path.isdir(in_dir)
    finally:
        server.stop()


def test_cache_flags_are_accepted(tmp_path):
    for flags in (["--cache-none"], ["--cache-ram", "1"], ["--cache-ram"], ["--cache-classic"]):
        server = ServerProcess(tmp_path / flags[0].strip("-") / str(len(flags)), flags, packs=()).start()
        try:
            _, body = server.post_prompt(simple_prompt(3))
            assert server.wait_history(body["prompt_id"])["status"]["completed"]
        finally:
            server.stop()
