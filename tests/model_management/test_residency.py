"""Loaded weights are owned by the residency manager: shared between workflows, kept within a RAM budget."""
import os
import uuid

import torch

from execution.caches import NoCache
from execution.scheduler import Executor, Job
from model_management.services import Services
from graph.validation import validate_prompt
from model_management.residency import ModelResidency, module_bytes
from nodes import builtin_catalogue


def test_a_resident_checkpoint_is_read_once_and_shared(tiny_models):
    models = ModelResidency()
    a = models.load_checkpoint(tiny_models.checkpoint("sd1"))
    b = models.load_checkpoint(tiny_models.checkpoint("sd1"))
    assert models.file_reads == 1
    assert a.model.unet is b.model.unet and a.clip.stack is b.clip.stack and a.vae.vae is b.vae.vae
    assert a.family.name == "sd1"


def test_switching_within_the_budget_never_rereads(tiny_models):
    models = ModelResidency(ram_budget_bytes=10 << 30)
    for family in ("sd1", "sdxl", "sd1", "sdxl", "sd1"):
        models.load_checkpoint(tiny_models.checkpoint(family)).model.unet
    assert models.file_reads == 2


def test_over_budget_evicts_least_recently_used_and_reloads_transparently(tiny_models):
    sizes = {}
    probe = ModelResidency()
    for family in ("sd1", "sdxl"):
        probe.load_checkpoint(tiny_models.checkpoint(family))
    for key, entry in probe.entries.items():
        sizes[key] = entry.bytes
    budget = max(sizes.values()) + 1  # room for one checkpoint at a time
    models = ModelResidency(ram_budget_bytes=budget)
    sd1 = models.load_checkpoint(tiny_models.checkpoint("sd1"))
    sdxl = models.load_checkpoint(tiny_models.checkpoint("sdxl"))
    assert len(models.entries) == 1 and models.resident_bytes() <= budget
    unet = sd1.model.unet  # evicted: loaded again behind the handle
    assert models.file_reads == 3 and isinstance(unet, torch.nn.Module)
    assert module_bytes(unet) > 0 and sdxl.family.name == "sdxl"
    models.unload_all()
    assert models.resident_bytes() == 0
    assert sd1.vae.vae is not None and models.file_reads == 4


def test_two_workflows_sharing_a_checkpoint_through_the_engine(tmp_path, tiny_models):
    services = Services.for_directory(str(tmp_path))
    services.models = ModelResidency()
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(services.paths.folder_paths("checkpoints")[0],
                                                           "m.safetensors"))
    catalogue = builtin_catalogue()
    executor = Executor(catalogue, NoCache(), services)  # no output cache: only residency can avoid reloads

    def workflow(text):
        return {"c": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
                "t": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["c", 1]}},
                "o": {"class_type": "PreviewAny", "inputs": {"source": ["t", 0]}}}

    for text in ("a cat", "a dog", "a cat"):
        checked = validate_prompt(workflow(text), catalogue, None, services)
        outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order))
        assert outcome.status == "success", outcome.error
    assert services.models.file_reads == 1


def test_compat_memory_calls_reach_the_manager(tiny_models, tmp_path):
    import importlib

    import compat
    from model_management.services import Services
    services = Services.for_directory(str(tmp_path))
    services.models = ModelResidency()
    compat.install(services, builtin_catalogue())  # puts the compat modules on sys.path
    mm = importlib.import_module("comfy.model_management")
    loaded = services.models.load_checkpoint(tiny_models.checkpoint("sd1"))
    mm.load_models_gpu([loaded.model])
    assert services.models.resident_bytes() > 0
    mm.free_memory(1, mm.get_torch_device())
    assert services.models.resident_bytes() == 0
    loaded.model.unet  # back on use
    mm.unload_all_models()
    assert services.models.entries == {}


def test_keep_alive_unloads_what_stayed_unused(tiny_models):
    models = ModelResidency(ram_budget_bytes=10 << 30, keep_alive=60.0)
    sd1 = models.load_checkpoint(tiny_models.checkpoint("sd1"))
    sdxl = models.load_checkpoint(tiny_models.checkpoint("sdxl"))
    sd1_key = sd1.model._unet.key
    now = models.entries[sd1_key].last_used
    assert models.expire_idle(now + 30) == 0 and len(models.entries) == 2
    sdxl.model.unet  # using a network refreshes its file's clock
    models.entries[sdxl.model._unet.key].last_used = now + 50
    freed = models.expire_idle(now + 61)
    assert freed > 0 and list(models.entries) == [sdxl.model._unet.key]
    sd1.model.unet  # an expired model is read again on use
    assert models.file_reads == 3
    assert ModelResidency().expire_idle() == 0  # no keep-alive: nothing expires


def test_the_worker_expires_idle_models_between_jobs(tmp_path, tiny_models):
    import time as _time

    from execution.job_store import JobStore
    from execution.worker import Worker
    services = Services.for_directory(str(tmp_path))
    services.models = ModelResidency(keep_alive=0.2)
    services.models.load_checkpoint(tiny_models.checkpoint("sd1"))
    store = JobStore(str(tmp_path / "jobs.db"))
    worker = Worker(store, Executor(builtin_catalogue(), services=services), lambda job: None, lambda: None,
                    services)
    worker.start()
    try:
        deadline = _time.monotonic() + 10
        while services.models.entries and _time.monotonic() < deadline:
            _time.sleep(0.1)
        assert not services.models.entries
    finally:
        worker.stop()


# -- ControlNets and upscale models share the budget -------------------------------------------------------------

def _generic_files(tmp_path):
    """Two ControlNet files and an upscale model file, in their real on-disk layouts."""
    from model_management.synthetic_controlnets import write_controlnet
    from tests.model_management.upscale_fixtures import compact_state_dict, write_safetensors
    return {"canny": write_controlnet(str(tmp_path / "canny.safetensors"), "sd1", seed=1),
            "depth": write_controlnet(str(tmp_path / "depth.safetensors"), "sd1", layout="diffusers", seed=2),
            "upscale": write_safetensors(compact_state_dict(), str(tmp_path / "2x.safetensors"))}


def _control_out(control, model):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 4, 6, 8, generator=g)
    context = torch.randn(1, 77, model.unet.config.context_dim, generator=g)
    hint = torch.rand(1, 3, 48, 64, generator=g)
    out = control.compute(x, torch.tensor([500.0]), context, None, hint, model)
    return [r.clone() for r in out["output"] + out["middle"]]


def test_generic_modules_are_read_once_and_counted_in_the_budget(tmp_path):
    from model_management.control_files import load_resident_control_model
    from model_management.upscaling import load_resident_upscale_model
    files = _generic_files(tmp_path)
    models = ModelResidency()
    a = load_resident_control_model(models, files["canny"])
    b = load_resident_control_model(models, files["canny"])
    up = load_resident_upscale_model(models, files["upscale"])
    assert models.file_reads == 2 and len(models.entries) == 2
    assert a.network is b.network and a._network.key == b._network.key  # one resident network behind both
    assert a.family == "sd1" and up.scale == 2
    sizes = sorted(entry.bytes for entry in models.entries.values())
    # each file counts its weights once (the descriptor part shares the upscale module's tensors)
    assert sizes == sorted([module_bytes(a.network), module_bytes(up.descriptor.model)]) and sizes[0] > 0
    assert models.resident_bytes() == sum(sizes)


def test_generic_modules_are_evicted_least_recently_used_and_reload_identically(tmp_path, tiny_models):
    from model_management.control_files import load_resident_control_model
    from model_management.upscaling import load_resident_upscale_model, upscale_image
    files = _generic_files(tmp_path)
    probe = ModelResidency()
    sd1 = probe.load_checkpoint(tiny_models.checkpoint("sd1"))
    handles = {"canny": load_resident_control_model(probe, files["canny"])._network,
               "depth": load_resident_control_model(probe, files["depth"])._network,
               "upscale": load_resident_upscale_model(probe, files["upscale"])._descriptor}
    sizes = {name: probe.entries[handle.key].bytes for name, handle in handles.items()}
    ckpt_bytes = probe.entries[sd1.model._unet.key].bytes
    # room for the checkpoint plus the two largest generic files, not for all three
    budget = ckpt_bytes + sum(sorted(sizes.values())[1:]) + 1
    assert ckpt_bytes + sum(sizes.values()) > budget
    models = ModelResidency(ram_budget_bytes=budget)
    model = models.load_checkpoint(tiny_models.checkpoint("sd1")).model
    canny = load_resident_control_model(models, files["canny"])
    up = load_resident_upscale_model(models, files["upscale"])
    image = torch.rand(1, 12, 10, 3, generator=torch.Generator().manual_seed(3))
    canny_before, up_before = _control_out(canny, model), upscale_image(up, image)
    model.unet  # the checkpoint is used: canny is now the least recently used
    assert models.file_reads == 3
    depth = load_resident_control_model(models, files["depth"])
    assert canny._network.key not in models.entries  # evicted, least recently used first
    assert up._descriptor.key in models.entries and depth._network.key in models.entries
    assert models.resident_bytes() <= budget
    assert depth.network is not None and models.file_reads == 4
    canny_after = _control_out(canny, model)  # read again behind the handle
    assert models.file_reads == 5
    assert all(torch.equal(x, y) for x, y in zip(canny_before, canny_after))
    assert len(canny_after) == len(canny_before) > 1
    models.unload_all()
    assert models.resident_bytes() == 0
    assert torch.equal(upscale_image(up, image), up_before) and models.file_reads == 6


def test_generic_modules_run_through_the_device_loader(tmp_path, tiny_models):
    from model_management.control_files import load_resident_control_model
    from model_management.device_loading import LOADED, DeviceLoader
    from model_management.devices import ComputeDevice
    from model_management.upscaling import load_resident_upscale_model, upscale_image
    files = _generic_files(tmp_path)
    plain = ModelResidency()
    plain_model = plain.load_checkpoint(tiny_models.checkpoint("sd1")).model
    image = torch.rand(1, 12, 10, 3, generator=torch.Generator().manual_seed(3))
    expected_control = _control_out(load_resident_control_model(plain, files["canny"]), plain_model)
    expected_up = upscale_image(load_resident_upscale_model(plain, files["upscale"]), image)

    loader = DeviceLoader(ComputeDevice.simulated(1 << 30))
    models = ModelResidency(devices=loader)
    model = models.load_checkpoint(tiny_models.checkpoint("sd1")).model
    canny = load_resident_control_model(models, files["canny"])
    up = load_resident_upscale_model(models, files["upscale"])
    out = _control_out(canny, model)
    rec = loader.record(canny.network)
    assert rec is not None and rec.bytes_in(LOADED) == module_bytes(canny.network)  # in the VRAM ledger
    # (the device copies are fresh allocations: CPU conv kernels may round differently than on the mmap'd file)
    for got, want in zip(out, expected_control):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(upscale_image(up, image), expected_up, rtol=1e-5, atol=1e-5)
    up_rec = loader.record(up.descriptor.model)
    assert up_rec is not None and up_rec.bytes_in(LOADED) > 0 and up_rec.in_use == 0
    # evicting the file drops its device copies first
    held, network, on_device = loader.held_bytes(), canny.network, rec.bytes_in(LOADED)
    models._drop(canny._network.key)
    assert loader.record(network) is None and loader.held_bytes() == held - on_device
