"""The device loader on a CPU with a simulated VRAM size: eviction order, partial loading, streaming, exact restore.

The simulated device makes real copies, so everything the loader does on a GPU (ledger, eviction, hooks that copy
weights in per forward) really runs here, and results can be compared bit for bit.
"""
import torch

from diffusion.unet import UNetModel
from diffusion.unet.config import tiny_sd1_config
from model_management.device_loading import HOST, LOADED, STREAMED, DeviceLoader
from model_management.devices import ComputeDevice, VRAMMode
from model_management.residency import ModelResidency, module_bytes
from model_management.weight_patches import LoraPatch


def _unet(seed=0):
    torch.manual_seed(seed)
    return UNetModel(tiny_sd1_config()).eval().requires_grad_(False)


def _inputs(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999.0, 10.0])
    context = torch.randn(2, 77, unet.config.context_dim, generator=g)
    return x, t, context


def _stack(n_layers=4, width=32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(n_layers)]).requires_grad_(False)


def _tensors(module):
    """name -> (the tensor the module holds, a copy of its values)."""
    out = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        out[name] = (t.data, t.detach().clone())
    return out


def _same_as_before(module, before):
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        held, values = before[name]
        assert t.data.data_ptr() == held.data_ptr(), f"{name} does not hold its host tensor again"
        assert torch.equal(t.data, values), f"{name} changed"


def _keep_time_embed(name, module):
    return name == "time_embed.0"


def test_loading_evicts_least_recently_used_only_as_far_as_needed():
    a, b, c = _stack(seed=1), _stack(seed=2), _stack(seed=3)
    size = module_bytes(a)
    layer = size // 4
    loader = DeviceLoader(ComputeDevice.simulated(int(size * 2.5)))
    loader.load(a)
    loader.load(b)
    loader.load(a)  # a is now the most recently used: b goes first
    assert loader.held_bytes() == 2 * size
    loader.load(c)
    # room for half a model was free: b gives up exactly the two layers still needed, a keeps everything
    assert loader.record(a).bytes_in(LOADED) == size
    assert loader.record(c).bytes_in(LOADED) == size
    assert loader.record(b).bytes_in(LOADED) == size - 2 * layer
    assert loader.record(b).names_in(HOST) == ["2", "3"]  # the last layers placed are evicted first
    assert loader.held_bytes() <= int(size * 2.5)
    assert list(loader.records) == [id(b), id(a), id(c)]  # MRU order kept


def test_a_model_in_use_is_never_evicted():
    a, b = _stack(seed=1), _stack(seed=2)
    size = module_bytes(a)
    loader = DeviceLoader(ComputeDevice.simulated(int(size * 1.5)))
    with loader.use(a):
        loader.load(b)
        assert loader.record(a).bytes_in(LOADED) == size  # b had to stream instead
        assert loader.record(b).bytes_in(STREAMED) > 0
        assert loader.held_bytes() <= int(size * 1.5)
    loader.load(b)  # a is free to give way now
    assert loader.record(b).bytes_in(LOADED) == size


def test_a_model_larger_than_the_budget_loads_the_units_that_fit_and_streams_the_rest():
    unet = _unet()
    budget = module_bytes(unet) // 3
    loader = DeviceLoader(ComputeDevice.simulated(budget))
    rec = loader.load(unet, torch.float32, keep_resident=_keep_time_embed)
    loaded = [u for u in rec.units if u.state == LOADED]
    streamed = [u for u in rec.units if u.state == STREAMED]
    assert loaded and streamed and len(loaded) + len(streamed) == len(rec.units)
    assert loader.held_bytes() == sum(u.bytes for u in loaded) <= budget
    assert sum(u.bytes for u in rec.units) == module_bytes(unet)
    # exactly the units that fit: every streamed one is larger than the room that is left
    assert all(u.bytes > loader.free_bytes() for u in streamed)
    # units that must not stream (custom modules, the caller's choice) are loaded; streamed ones are plain layers
    assert "time_embed.0" in rec.names_in(LOADED)
    assert all(u.streamable for u in streamed)
    # loaded units hold separate copies, streamed ones their host tensors between forwards
    host = {u.name: u.host() for u in rec.units}
    for unit in loaded:
        assert all(t.data_ptr() != h.data_ptr() for (_, _, h), t in zip(unit.tensors, unit.held()))
    for unit in streamed:
        assert all(t.data_ptr() == h.data_ptr() for h, t in zip(host[unit.name], unit.held()))


def test_streamed_forward_equals_the_fully_loaded_forward():
    unet = _unet()
    x, t, context = _inputs(unet)
    reference = unet(x, t, context)
    size = module_bytes(unet)
    outputs = {}
    for label, budget, mode in (("full", size * 2, VRAMMode.NORMAL), ("partial", size // 4, VRAMMode.NORMAL),
                                ("novram", size * 2, VRAMMode.NO), ("lowvram", size, VRAMMode.LOW)):
        loader = DeviceLoader(ComputeDevice.simulated(budget, mode))
        with loader.use(unet, torch.float32, keep_resident=_keep_time_embed):
            outputs[label] = unet(x, t, context)
            rec = loader.record(unet)
            if label == "full":
                assert rec.bytes_in(STREAMED) == 0 and loader.streamed_bytes == 0
            else:
                # each streamed unit was copied in once per call
                assert rec.bytes_in(STREAMED) > 0 and loader.streamed_bytes >= rec.bytes_in(STREAMED)
            if label == "novram":
                assert rec.names_in(LOADED) == ["time_embed.0"]
            if label == "lowvram":
                assert 0 < rec.bytes_in(LOADED) <= size // 2
        loader.unload(unet)
    for label, out in outputs.items():
        assert torch.equal(out, reference), label


def test_unloading_restores_the_very_host_tensors():
    unet = _unet()
    before = _tensors(unet)
    loader = DeviceLoader(ComputeDevice.simulated(module_bytes(unet) // 2))
    loader.load(unet, torch.float32, keep_resident=_keep_time_embed)
    unet(*_inputs(unet))
    assert loader.unload(unet) > 0
    _same_as_before(unet, before)
    assert loader.held_bytes() == 0 and loader.record(unet) is None
    # no hooks are left behind: a forward now copies nothing
    streamed = loader.streamed_bytes
    unet(*_inputs(unet))
    assert loader.streamed_bytes == streamed


def test_lora_on_loaded_and_streamed_layers_matches_and_restores_bit_exact(tiny_models):
    path = tiny_models.checkpoint("sd1")
    plain = ModelResidency().load_checkpoint(path).model  # no device: the reference
    size = module_bytes(plain.unet)
    models = ModelResidency(devices=DeviceLoader(ComputeDevice.simulated(size // 3)))
    model = models.load_checkpoint(path).model
    unet = model.unet
    before = _tensors(unet)
    model.make_resident()
    rec = models.devices.record(unet)
    linear_in = lambda state: [u.name for u in rec.units if u.state == state and isinstance(u.module, torch.nn.Linear)]
    targets = [linear_in(LOADED)[0], linear_in(STREAMED)[0]]
    g = torch.Generator().manual_seed(5)
    specs = []
    for name in targets:
        out_f, in_f = unet.get_submodule(name).weight.shape
        patch = LoraPatch(torch.randn(out_f, 4, generator=g), torch.randn(4, in_f, generator=g), alpha=2.0)
        specs.append((name + ".weight", patch, 0.7))
    x, t, context = _inputs(unet)
    patched_ref, patched = plain.with_patches(specs), model.with_patches(specs)
    with patched_ref.patched():
        expected = patched_ref.forward(x, t, context)
    with patched.patched():
        assert rec.bytes_in(STREAMED) > 0  # the setting this test is about
        got = patched.forward(x, t, context)
    assert torch.equal(got, expected)
    assert not torch.equal(got, model.forward(x, t, context))  # the patch did change the output
    # the device copies and the host staging are back to the original bits, and so is everything after unloading
    for unit in rec.units:
        for (kind, key, host), held in zip(unit.tensors, unit.held()):
            assert torch.equal(held, host), unit.name
    models.devices.unload(unet)
    _same_as_before(unet, before)


def test_an_in_place_patcher_on_streamed_layers_matches_and_restores():
    """Patchers that write into the tensors (backups elsewhere) work too: the staging tensor itself is patched."""
    from model_management.weight_patches import WeightPatcher
    unet, reference = _unet(), _unet()
    before = _tensors(unet)
    loader = DeviceLoader(ComputeDevice.simulated(module_bytes(unet) // 3))
    rec = loader.load(unet, torch.float32, keep_resident=_keep_time_embed)
    names = [u.name for u in rec.units if isinstance(u.module, torch.nn.Linear) and u.state == STREAMED][:3]
    g = torch.Generator().manual_seed(9)
    specs = []
    for name in names:
        out_f, in_f = unet.get_submodule(name).weight.shape
        specs.append((name + ".weight", LoraPatch(torch.randn(out_f, 2, generator=g), torch.randn(2, in_f, generator=g)),
                      1.0))
    x, t, context = _inputs(unet)
    with loader.use(unet, torch.float32, keep_resident=_keep_time_embed):
        patcher = WeightPatcher(unet, specs, backup_device="cpu")
        patcher.apply()
        got = unet(x, t, context)
        loader.synchronize()
        patcher.restore()
    ref_patcher = WeightPatcher(reference, specs)
    ref_patcher.apply()
    assert torch.equal(got, reference(x, t, context))
    ref_patcher.restore()
    loader.unload(unet)
    _same_as_before(unet, before)


def test_model_objects_ask_the_loader_and_match_the_cpu_results(tiny_models):
    path = tiny_models.checkpoint("sd1")
    plain = ModelResidency().load_checkpoint(path)
    sizes = sum(module_bytes(m) for m in (plain.model.unet, plain.clip.stack, plain.vae.vae))
    models = ModelResidency(devices=DeviceLoader(ComputeDevice.simulated(sizes // 4)))
    sim = models.load_checkpoint(path)
    cond_ref, pooled_ref, _ = plain.clip.encode("a photo of a cat")
    cond, pooled, _ = sim.clip.encode("a photo of a cat")
    assert torch.equal(cond, cond_ref) and torch.equal(pooled, pooled_ref)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    image = sim.vae.decode(latent)
    assert torch.equal(image, plain.vae.decode(latent))
    assert torch.equal(sim.vae.encode(image), plain.vae.encode(image))
    x, t, context = _inputs(sim.model.unet)
    assert torch.equal(sim.model.forward(x, t, context), plain.model.forward(x, t, context))
    # all three networks went through the loader, most recently used last, within the budget
    assert [type(r.root).__name__ for r in models.devices.records.values()] == \
        ["ClipTextStack", "AutoencoderKL", "UNetModel"]
    assert 0 < models.devices.held_bytes() <= sizes // 4
    assert models.devices.streamed_bytes > 0
    # release_device hands a network its host weights back (before saving or merging reads them)
    from model_management.model_objects import release_device
    release_device(sim.vae)
    assert models.devices.record(sim.vae.vae) is None and models.devices.record(sim.model.unet) is not None
    # evicting the file from RAM drops its device copies too
    models.unload_all()
    assert models.devices.records == {} and models.devices.held_bytes() == 0


def test_every_streamed_layer_is_copied_in_by_its_own_forward(tiny_models):
    """A layer whose weights other code reads directly would run with host weights on a GPU; on the CPU that goes
    unnoticed. So stream everything, and check that each streamed layer was streamed in by its own forward, or
    that its weights do not matter at all (a skipped CLIP layer): NaN in them leaves every output the same."""
    for family in ("sd1", "sdxl"):
        models = ModelResidency(devices=DeviceLoader(ComputeDevice.simulated(1 << 30, VRAMMode.NO)))
        loaded = models.load_checkpoint(tiny_models.checkpoint(family))
        unet = loaded.model.unet
        x, t, context = _inputs(unet)
        y = torch.randn(2, unet.config.adm_in_channels) if unet.config.adm_in_channels else None

        def run_all():
            cond, pooled, _ = loaded.clip.encode("a photo of a cat")
            image = loaded.vae.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
            return [cond, pooled, image, loaded.vae.encode(image), loaded.model.forward(x, t, context, y=y)]

        before = run_all()
        assert len(models.devices.records) == 3
        missed = [u for rec in models.devices.records.values() for u in rec.units
                  if u.state == STREAMED and u.streams == 0]
        models.devices.unload_all()
        for unit in missed:
            for _, _, tensor in unit.tensors:
                tensor.fill_(float("nan"))
        after = run_all()
        for a, b in zip(before, after):
            assert torch.equal(a, b), f"{family}: weights of {[u.name for u in missed]} are used outside their forward"


def test_a_plain_cpu_copies_nothing(tiny_models):
    models = ModelResidency()
    loaded = models.load_checkpoint(tiny_models.checkpoint("sd1"))
    before = _tensors(loaded.model.unet)
    x, t, context = _inputs(loaded.model.unet)
    loaded.model.forward(x, t, context)
    loaded.clip.encode("a cat")
    assert not models.devices.active and models.devices.records == {}
    _same_as_before(loaded.model.unet, before)


def test_highvram_never_streams_and_unload_all_empties_the_ledger():
    a, b = _stack(seed=1), _stack(seed=2)
    size = module_bytes(a)
    loader = DeviceLoader(ComputeDevice.simulated(int(size * 1.5), VRAMMode.HIGH))
    loader.load(a)
    loader.load(b)
    assert loader.record(b).bytes_in(LOADED) == size and loader.record(b).bytes_in(STREAMED) == 0
    assert loader.record(a).bytes_in(LOADED) < size  # a made room as far as it could
    loader.unload_all()
    assert loader.held_bytes() == 0 and loader.records == {}


def test_reserve_is_kept_free():
    a = _stack()
    size = module_bytes(a)
    loader = DeviceLoader(ComputeDevice.simulated(size, reserve_bytes=size // 2))
    rec = loader.load(a)
    assert rec.bytes_in(LOADED) == size // 2 and rec.bytes_in(STREAMED) == size // 2


def test_free_evicts_module_by_module_and_spares_kept_models():
    a, b = _stack(seed=1), _stack(seed=2)
    size = module_bytes(a)
    loader = DeviceLoader(ComputeDevice.simulated(size * 4))
    loader.load(a)
    loader.load(b)
    freed = loader.free(size // 4 + 1, keep=(a,))  # a little more than one layer: two of b's layers
    assert freed == 2 * (size // 4)
    assert loader.record(a).bytes_in(LOADED) == size and loader.record(b).bytes_in(LOADED) == size // 2
