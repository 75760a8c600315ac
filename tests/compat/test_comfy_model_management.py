"""`comfy.model_management` as packs call it, over the real device loader (a simulated VRAM size on the CPU)."""
import importlib

import pytest

import compat
from model_management.services import Services
from model_management.device_loading import LOADED, DeviceLoader
from model_management.devices import ComputeDevice, VRAMMode
from model_management.residency import ModelResidency, module_bytes
from nodes import builtin_catalogue


@pytest.fixture
def bound(tmp_path):
    def bind(compute):
        services = Services.for_directory(str(tmp_path))
        services.models = ModelResidency(devices=DeviceLoader(compute))
        compat.install(services, builtin_catalogue())
        return services, importlib.import_module("comfy.model_management")
    return bind


def test_vram_state_follows_the_mode(bound):
    for mode, state in ((VRAMMode.HIGH, "HIGH_VRAM"), (VRAMMode.NORMAL, "NORMAL_VRAM"), (VRAMMode.LOW, "LOW_VRAM"),
                        (VRAMMode.NO, "NO_VRAM")):
        _, mm = bound(ComputeDevice.simulated(1 << 30, mode))
        assert mm.vram_state == mm.VRAMState[state]
    _, mm = bound(ComputeDevice.cpu())
    assert mm.vram_state == mm.VRAMState.DISABLED and mm.cpu_state == mm.CPUState.CPU


def test_memory_figures_and_loading_go_through_the_loader(bound, tiny_models):
    services, mm = bound(ComputeDevice.simulated(1 << 30, reserve_bytes=1 << 20))
    loaded = services.models.load_checkpoint(tiny_models.checkpoint("sd1"))
    device = mm.get_torch_device()
    assert mm.get_total_memory(device) == 1 << 30 and mm.get_free_memory(device) == 1 << 30
    assert mm.extra_reserved_memory() == 1 << 20
    mm.load_models_gpu([loaded.model, loaded.vae])
    unet_bytes, vae_bytes = module_bytes(loaded.model.unet), module_bytes(loaded.vae.vae)
    assert services.devices.held_bytes() == unet_bytes + vae_bytes
    assert mm.get_free_memory(device) == (1 << 30) - unet_bytes - vae_bytes
    # free_memory evicts least recently used first (the UNet), unit by unit, only as far as asked
    mm.free_memory(1, device, keep_loaded=[loaded.vae])
    unet_rec = services.devices.record(loaded.model.unet)
    assert 0 < unet_bytes - unet_rec.bytes_in(LOADED) <= max(u.bytes for u in unet_rec.units)
    assert services.devices.record(loaded.vae.vae).bytes_in(LOADED) == vae_bytes
    assert services.models.resident_bytes() > 0  # RAM residency untouched
    mm.unload_all_models()
    assert services.devices.held_bytes() == 0 and services.models.entries == {}
    assert mm.get_free_memory(device) == 1 << 30
