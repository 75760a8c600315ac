"""The precision policy: what each model part computes in, from the CPU's flags (read from fixtures, not this
machine), the GPU's capability and ComfyUI's flags; shown in /system_stats, reflected in comfy.cli_args."""
import os

import pytest
import torch

import server
from model_management.devices import ComputeDevice, device_from_flags
from model_management.precision_policy import (PrecisionFlags, PrecisionPolicy, choose_policy, cpu_has_fast_bf16,
                                               read_cpu_flags)
from tests.server_harness import ServerProcess

CPUINFO = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "cpuinfo")
CPU = torch.device("cpu")


def flags_of(name):
    with open(os.path.join(CPUINFO, name + ".txt"), encoding="utf-8") as f:
        return read_cpu_flags(f.read())


def args_of(*argv):
    return server.parse_args(list(argv))


def test_cpu_flags_are_read_from_the_cpuinfo_text():
    xeon, milan, genoa, arm = (flags_of(n) for n in ("xeon_sapphire_rapids", "amd_epyc_milan", "amd_epyc_genoa",
                                                     "arm_neoverse_v1"))
    assert {"amx_bf16", "amx_tile", "avx512_bf16", "avx2"} <= xeon
    assert "avx2" in milan and "avx512f" not in milan
    assert "avx512_bf16" in genoa and "amx_bf16" not in genoa
    assert "asimd" in arm and "bf16" in arm  # ARM's "Features" line
    assert [cpu_has_fast_bf16(f) for f in (xeon, milan, genoa, arm)] == [True, False, True, False]
    assert read_cpu_flags("processor : 0\n") == frozenset()


@pytest.mark.parametrize("cpu,expected", [
    ("xeon_sapphire_rapids", dict(unet="bf16", text_encoder="bf16", controlnet="bf16", vae="bf16", upscale="fp32")),
    ("amd_epyc_genoa", dict(unet="bf16", text_encoder="bf16", controlnet="bf16", vae="bf16", upscale="fp32")),
    ("amd_epyc_milan", dict(unet="fp32", text_encoder="fp32", controlnet="fp32", vae="fp32", upscale="fp32")),
    ("arm_neoverse_v1", dict(unet="fp32", text_encoder="fp32", controlnet="fp32", vae="fp32", upscale="fp32")),
])
def test_cpu_default_follows_the_flags(cpu, expected):
    described = choose_policy(CPU, PrecisionFlags(), cpu_flags=flags_of(cpu)).describe()
    assert {part: described[part] for part in expected} == expected
    assert ("without" in described["reason"]) == (expected["unet"] == "fp32")


def test_comfyui_flags_override_the_default():
    xeon = flags_of("xeon_sapphire_rapids")
    full = choose_policy(CPU, PrecisionFlags.from_args(args_of("--force-fp32")), cpu_flags=xeon)
    assert full == PrecisionPolicy(reason="--force-fp32") and full.describe()["unet"] == "fp32"
    assert all(full.dtype_for(p) == torch.float32 for p in ("unet", "text_encoder", "vae", "controlnet", "upscale"))
    mixed = choose_policy(CPU, PrecisionFlags.from_args(args_of("--fp32-unet", "--bf16-vae", "--fp16-text-enc")),
                          cpu_flags=xeon)
    assert (mixed.unet, mixed.controlnet, mixed.vae, mixed.text_encoder) == (
        torch.float32, torch.float32, torch.bfloat16, torch.float16)
    assert "--fp32-unet" in mixed.reason and "--bf16-vae" in mixed.reason
    # on a CPU without fast bf16 a user can still ask for it
    asked = choose_policy(CPU, PrecisionFlags.from_args(args_of("--bf16-unet")), cpu_flags=flags_of("amd_epyc_milan"))
    assert asked.unet == asked.controlnet == torch.bfloat16 and asked.text_encoder == torch.float32
    half = choose_policy(CPU, PrecisionFlags.from_args(args_of("--force-fp16")), cpu_flags=xeon)
    assert half.describe()["vae"] == "fp16"
    with pytest.raises(SystemExit):
        args_of("--fp32-unet", "--bf16-unet")  # one choice per part
    with pytest.raises(SystemExit):
        args_of("--force-fp32", "--force-fp16")


def test_cuda_policy_by_capability():
    ampere = choose_policy(torch.device("cuda", 0), cuda_capability=(8, 6), cuda_bf16=True)
    assert (ampere.unet, ampere.text_encoder, ampere.vae, ampere.upscale) == (
        torch.float16, torch.float16, torch.bfloat16, torch.float16)
    turing = choose_policy(torch.device("cuda", 0), cuda_capability=(7, 5), cuda_bf16=False)
    assert turing.unet == torch.float16 and turing.vae == torch.float32
    kepler = choose_policy(torch.device("cuda", 0), cuda_capability=(3, 7), cuda_bf16=False)
    assert kepler.unet == torch.float32 and "3.7" in kepler.reason
    forced = choose_policy(torch.device("cuda", 0), PrecisionFlags(force_fp32=True), cuda_capability=(8, 6),
                           cuda_bf16=True)
    assert forced.vae == forced.unet == torch.float32


def test_the_server_device_carries_the_policy_and_plain_devices_are_full_precision():
    assert ComputeDevice.cpu().precision == PrecisionPolicy.full()
    machine = read_cpu_flags()
    compute = device_from_flags(cpu=True)
    assert compute.precision.unet == (torch.bfloat16 if cpu_has_fast_bf16(machine) else torch.float32)
    forced = device_from_flags(cpu=True, precision=PrecisionFlags(force_fp32=True))
    assert forced.precision.reason == "--force-fp32"
    simulated = device_from_flags(simulate_vram_gb=1, precision=PrecisionFlags(unet="fp16"))
    assert simulated.is_simulated and simulated.precision.unet == torch.float16


def test_services_log_the_policy_and_comfy_cli_args_reflect_the_flags(tmp_path, caplog):
    import logging
    from compat import _runtime
    from compat.comfy.cli_args import args as comfy_args
    args = args_of("--base-directory", str(tmp_path), "--cpu", "--force-fp32", "--bf16-vae")
    with caplog.at_level(logging.INFO, logger="tessera"):
        services = server.services_from(args)
    assert "precision: unet fp32" in caplog.text and "vae bf16" in caplog.text
    assert services.models.precision.vae == torch.bfloat16
    previous = _runtime.state.services
    _runtime.state.services = services
    try:
        assert comfy_args.force_fp32 is True and comfy_args.bf16_vae is True and comfy_args.fp16_unet is False
        from compat.comfy import model_management as comfy_mm
        assert (comfy_mm.unet_dtype(), comfy_mm.vae_dtype(), comfy_mm.text_encoder_dtype()) == (
            torch.float32, torch.bfloat16, torch.float32)
    finally:
        _runtime.state.services = previous


def test_system_stats_shows_the_policy(tmp_path):
    srv = ServerProcess(str(tmp_path), ["--force-fp32", "--bf16-text-enc"], packs=()).start()
    try:
        status, stats = srv.json("GET", "/system_stats")
        device = stats["devices"][0]
    finally:
        srv.stop()
    assert status == 200 and device["precision"]["unet"] == "fp32" and device["precision"]["text_encoder"] == "bf16"
    assert device["precision"]["reason"].startswith("--force-fp32")
