"""The compute device, its modes and budgets, and the server flags that choose them."""
import os

import pytest
import torch

import server
from model_management.devices import GIB, ComputeDevice, VRAMMode, device_from_flags, pick_device


def test_cpu_is_forced_and_a_plain_cpu_is_inactive():
    assert pick_device(force_cpu=True) == torch.device("cpu")
    compute = device_from_flags(cpu=True, mode="lowvram")
    assert compute.device.type == "cpu" and compute.mode is VRAMMode.CPU and not compute.active


def test_the_default_device_is_the_best_available():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected == device_from_flags().device.type


def test_a_simulated_device_counts_the_reserve_and_what_is_held():
    compute = ComputeDevice.simulated(1000, VRAMMode.LOW, reserve_bytes=100)
    assert compute.active and compute.is_simulated and compute.device.type == "cpu"
    assert compute.total_bytes() == 1000 and compute.usable_bytes() == 900
    assert compute.free_bytes(held_bytes=300) == 600 and compute.raw_free_bytes(held_bytes=300) == 700
    assert compute.free_bytes(held_bytes=950) == 0
    assert "simulated" in compute.name


@pytest.mark.parametrize("flag,mode", [("--highvram", "highvram"), ("--normalvram", "normalvram"),
                                       ("--lowvram", "lowvram"), ("--novram", "novram")])
def test_vram_flags_reach_the_loader(flag, mode):
    args = server.parse_args([flag, "--reserve-vram", "0.5", "--simulate-vram", "2", "--ram-budget", "3"])
    services = server.services_from(args)
    compute = services.devices.compute
    assert compute.mode.value == mode and services.settings["vram_mode"] == mode
    assert compute.reserve_bytes == GIB // 2 and compute.simulated_bytes == 2 * GIB
    assert services.models.budget == 3 * GIB and services.models.device == torch.device("cpu")


def test_vram_modes_are_mutually_exclusive_and_cpu_wins():
    with pytest.raises(SystemExit):
        server.parse_args(["--lowvram", "--novram"])
    services = server.services_from(server.parse_args(["--cpu", "--highvram"]))
    assert services.devices.mode is VRAMMode.CPU and not services.devices.active


def _txt2img(seed):
    import json
    import os
    with open(os.path.join(os.path.dirname(server.__file__), "workflows", "txt2img.api.json")) as f:
        prompt = json.load(f)
    prompt["5"]["inputs"].update(width=64, height=64)
    prompt["3"]["inputs"].update(steps=2, seed=seed)
    return prompt


def test_system_stats_reports_the_device_and_free_unloads_its_copies(tmp_path, tiny_models):
    import os
    import time

    from tests.server_harness import ServerProcess
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.checkpoint("sd1"), checkpoints / "v1-5-pruned-emaonly.safetensors")
    srv = ServerProcess(tmp_path, ["--simulate-vram", "1", "--lowvram", "--reserve-vram", "0.25"], packs=()).start()

    def device():
        status, stats = srv.json("GET", "/system_stats")
        assert status == 200
        return stats["devices"][0]

    def settled(predicate):
        deadline = time.time() + 30
        while time.time() < deadline:
            info = device()
            if predicate(info):
                return info
            time.sleep(0.05)
        raise AssertionError(f"device never settled: {info}")

    try:
        info = device()
        assert info["type"] == "cpu" and info["vram_total"] == GIB and info["vram_free"] == GIB
        assert info["vram_mode"] == "lowvram" and info["reserve_vram"] == GIB // 4 and info["loaded_weights"] == 0
        for seed, body in ((1, {"unload_models": True}), (2, {"free_memory": True})):
            _, posted = srv.post_prompt(_txt2img(seed))  # a new seed: not all cached, the models run again
            entry = srv.wait_history(posted["prompt_id"], timeout=120)
            assert entry["status"]["completed"], entry
            info = device()
            assert info["loaded_weights"] > 0 and info["vram_free"] == GIB - info["loaded_weights"]
            assert srv.json("POST", "/free", body) == (200, {})
            settled(lambda d: d["loaded_weights"] == 0 and d["vram_free"] == GIB)
    finally:
        srv.stop()


def test_one_host_memory_probe_reads_meminfo_and_every_user_sees_the_same_figures():
    from model_management import devices, host_memory
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        assert abs(host_memory.total_bytes() - fields["MemTotal"]) == 0
        assert abs(host_memory.available_bytes() - fields["MemAvailable"]) < 512 << 20  # it moves a little
    assert devices.ram_total() == host_memory.total_bytes()
    assert 0 < host_memory.available_bytes() <= host_memory.total_bytes()
