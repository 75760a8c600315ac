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


def _cached_nodes(server, prompt):
    """Run `prompt`; the node ids its history says were served from the cache."""
    _, body = server.post_prompt(prompt)
    entry = server.wait_history(body["prompt_id"])
    assert entry["status"]["completed"], entry["status"]
    cached = [data["nodes"] for name, data in entry["status"]["messages"] if name == "execution_cached"]
    return sorted(cached[0]) if cached else []


def test_each_cache_flag_keeps_what_it_promises(tmp_path):
    a, b = simple_prompt(3), simple_prompt(4)
    # (flags, what the repeat of `a` after `a, b` finds cached)
    cases = [(["--cache-classic"], []),            # classic keeps the latest job's outputs only: b replaced a
             (["--cache-lru", "2"], ["1", "2"]),   # two jobs' worth: a is still there
             (["--cache-lru", "0"], []),           # ComfyUI's default value: the classic cache
             (["--cache-none"], []),
             (["--cache-ram", "0.000001"], ["1", "2"]),  # tiny headroom: never under pressure, keeps all
             (["--cache-ram", "1000000"], [])]     # a million GB of headroom: always under pressure, keeps none
    for index, (flags, after_other) in enumerate(cases):
        server = ServerProcess(tmp_path / f"case{index}", flags, packs=()).start()
        try:
            assert _cached_nodes(server, a) == [], flags
            repeat = _cached_nodes(server, a)
            expected_repeat = [] if flags in (["--cache-none"], ["--cache-ram", "1000000"]) else ["1", "2"]
            assert repeat == expected_repeat, (flags, repeat)
            _cached_nodes(server, b)
            assert _cached_nodes(server, a) == after_other, flags
        finally:
            server.stop()

def test_a_first_start_without_a_checkpoint_says_where_one_goes_and_how_to_make_one(tmp_path):
    import time
    empty = ServerProcess(tmp_path / "empty", packs=()).start()
    try:
        deadline = time.time() + 10
        while "No checkpoint found" not in empty.read_log() and time.time() < deadline:
            time.sleep(0.1)
        log = empty.read_log()
        folder = os.path.join(str(tmp_path / "empty"), "models", "checkpoints")
        assert f"No checkpoint found. Put a Stable Diffusion .safetensors file (SD1.x, SD2.x, SDXL) in {folder}" in log
        assert "python -m diffusion.synthetic_checkpoints sd1 " in log
    finally:
        empty.stop()
    stocked = tmp_path / "stocked"
    (stocked / "models" / "checkpoints").mkdir(parents=True)
    (stocked / "models" / "checkpoints" / "m.safetensors").write_bytes(b"x")
    server = ServerProcess(stocked, packs=()).start()
    try:
        time.sleep(0.5)
        assert "No checkpoint found" not in server.read_log()
    finally:
        server.stop()


def test_the_generator_writes_under_the_name_the_examples_load(tmp_path):
    import subprocess
    import sys
    from tests.server_harness import ROOT
    result = subprocess.run([sys.executable, "-m", "diffusion.synthetic_checkpoints", "sd1"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    written = tmp_path / "models" / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
    assert written.is_file() and result.stdout.strip() == os.path.join("models", "checkpoints", written.name)
