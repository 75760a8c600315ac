"""Loaded weights are owned by the residency manager: shared between workflows, kept within a RAM budget."""
import os
import uuid

import torch

from execution.caches import NoCache
from execution.scheduler import Executor, Job
from execution.services import Services
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
    from execution.services import Services
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
