"""A diffusion model larger than the RAM budget runs from its memory-mapped file (host_streaming.py): same numbers
as the ordinary load, layers beyond the window handed back after they ran (checked in the process's own page
tables, /proc/self/smaps), LoRAs applied per layer call without a patched copy, the budget accounting honest."""
import os

import torch
from safetensors.torch import save_file

from model_management.file_loading import load_state_dict
from model_management.host_streaming import host_stream_of
from model_management.mapped_weights import MappedFile, stored_bytes
from model_management.residency import ModelResidency
from model_management.weight_patches import LoraPatch


def _inputs(config):
    g = torch.Generator().manual_seed(3)
    return (torch.randn(1, 16, 8, 8, generator=g), torch.tensor([0.6]),
            torch.randn(1, 5, config.context_in, generator=g), torch.randn(1, config.vec_in, generator=g),
            torch.tensor([3.5]))


def _run(model):
    x, t, context, pooled, guidance = _inputs(model.unet.config)
    with torch.no_grad(), model.patched():
        return model.forward(x, t, context, y=pooled, guidance=guidance)


def _mapped_rss(mapping: MappedFile) -> int:
    """Bytes of the map that are in this process's page tables now (smaps' Rss of the map's range)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and all(c in "0123456789abcdef-" for c in head[0]):
                start, end = (int(v, 16) for v in head[0].split("-"))
                inside = start < mapping.base + mapping.size and end > mapping.base
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def _budgeted(path, fraction):
    size = stored_bytes(path)
    return ModelResidency(ram_budget_bytes=int(size * fraction)), size


def test_a_model_over_budget_runs_from_its_file_with_the_same_numbers(tiny_models):
    path = tiny_models.flux("diffusion_model")
    expected = _run(ModelResidency(ram_budget_bytes=1 << 40).load_unet(path))
    models, size = _budgeted(path, 0.4)
    model = models.load_unet(path)
    stream = host_stream_of(model.unet)
    assert stream is not None and stream.streamed and stream.kept
    assert stream.kept_bytes + stream.streamed_bytes + stream.owned_bytes >= size * 0.9
    torch.testing.assert_close(_run(model), expected, rtol=0, atol=0)
    assert stream.forwards == len(stream.streamed) and stream.mapping.released_bytes > 0
    assert models.resident_bytes() == stream.resident_bytes() <= models.budget


def test_streamed_layers_leave_the_process_after_they_ran(tiny_models):
    path = tiny_models.flux("diffusion_model")
    models, _ = _budgeted(path, 0.3)
    model = models.load_unet(path)
    stream = host_stream_of(model.unet)
    _run(model)
    pages_edges = 2 * 4096 * sum(len(u.spans) for u in stream.streamed)
    held = _mapped_rss(stream.mapping)
    assert held <= stream.kept_bytes + pages_edges + 64 * 1024
    for unit in stream.streamed:  # touching every weight maps it all in: the measure does see them
        for tensor in list(unit.module.parameters(recurse=False)):
            float(tensor.float().sum())
    assert _mapped_rss(stream.mapping) >= held + stream.streamed_bytes * 0.8
    stream.release_all()
    assert _mapped_rss(stream.mapping) <= held + pages_edges
    for name, param in model.unet.named_parameters():  # weights are still the file's views, nothing copied
        if param.dtype == torch.float32 and param.numel() > 4096:
            assert stream.mapping.span(param) is not None, name


def test_a_lora_applies_per_layer_call_and_leaves_the_mapped_weights(tiny_models):
    path = tiny_models.flux("diffusion_model")
    regular = ModelResidency(ram_budget_bytes=1 << 40).load_unet(path)
    models, _ = _budgeted(path, 0.3)
    mapped = models.load_unet(path)
    g = torch.Generator().manual_seed(1)
    specs = []
    for name in ("double_blocks.0.img_attn.qkv.weight", "single_blocks.1.linear1.weight", "final_layer.linear.weight"):
        weight = mapped.unet.get_parameter(name)
        up, down = torch.randn(weight.shape[0], 4, generator=g), torch.randn(4, weight.shape[1], generator=g)
        specs.append((name, LoraPatch(up * 0.1, down * 0.1, alpha=None), 0.8))
    before = {n: p.data_ptr() for n, p in mapped.unet.named_parameters()}
    hooks = {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in mapped.unet.named_modules()}
    expected = _run(regular.with_patches(specs))
    got = _run(mapped.with_patches(specs))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not torch.equal(got, _run(mapped))  # the patch did take effect
    for name, param in mapped.unet.named_parameters():
        assert param.data_ptr() == before[name], name
    assert hooks == {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in mapped.unet.named_modules()}


def test_fp8_weight_dtype_over_budget_rounds_like_the_fp8_load(tiny_models, tmp_path):
    path = tiny_models.flux("diffusion_model")
    expected = _run(ModelResidency(ram_budget_bytes=1 << 40).load_unet(path, torch.float8_e4m3fn))
    models = ModelResidency(ram_budget_bytes=stored_bytes(path, lambda d: torch.float8_e4m3fn) // 3)
    model = models.load_unet(path, torch.float8_e4m3fn)
    assert host_stream_of(model.unet) is not None
    torch.testing.assert_close(_run(model), expected, rtol=0, atol=0)


def test_a_budget_the_model_fits_loads_it_as_usual(tiny_models):
    path = tiny_models.flux("diffusion_model")
    model = ModelResidency(ram_budget_bytes=stored_bytes(path) * 3).load_unet(path)
    assert host_stream_of(model.unet) is None


def test_other_resident_files_stay_within_the_budget(tiny_models):
    path = tiny_models.flux("diffusion_model")
    vae = tiny_models.flux("vae")
    size = stored_bytes(path)
    models = ModelResidency(ram_budget_bytes=int(size * 0.6))
    models.load_vae(vae).vae  # resident first
    vae_bytes = models.resident_bytes()
    stream = host_stream_of(models.load_unet(path).unet)
    assert stream.resident_bytes() <= models.budget - vae_bytes
    assert len(models.entries) == 2 and models.resident_bytes() <= models.budget


def test_a_file_with_unaligned_tensors_still_maps(tmp_path):
    path = str(tmp_path / "odd.safetensors")
    save_file({"a": torch.arange(3, dtype=torch.uint8), "b": torch.randn(5, 7), "c": torch.randn(64, 64)}, path)
    mapping = MappedFile(path)
    for key, value in load_state_dict(path).items():
        assert torch.equal(mapping.tensor(key), value), key
    assert mapping.span(mapping.tensor("c")) is not None and os.path.getsize(path) == mapping.size


def test_a_checkpoint_over_budget_streams_its_diffusion_model_and_reads_the_rest(tiny_models):
    from model_management.residency import ModelResidency as Residency
    path = tiny_models.flux("checkpoint")
    regular = Residency(ram_budget_bytes=1 << 40).load_checkpoint(path)
    probe = Residency(ram_budget_bytes=1)
    unet_bytes, rest_bytes = probe._checkpoint_parts_bytes(path, probe.precision)
    models = Residency(ram_budget_bytes=unet_bytes // 2)  # the transformer alone does not fit
    loaded = models.load_checkpoint(path)
    stream = host_stream_of(loaded.model.unet)
    assert stream is not None and stream.streamed
    assert host_stream_of(loaded.vae.vae) is None and loaded.clip is not None
    torch.testing.assert_close(_run(loaded.model), _run(regular.model), rtol=0, atol=0)
    text, _, _ = loaded.clip.encode("a lighthouse")
    expected, _, _ = regular.clip.encode("a lighthouse")
    assert torch.equal(text, expected)
    if rest_bytes >= models.budget:  # the encoders took the budget: nothing of the transformer is kept
        assert not stream.kept
    assert Residency(ram_budget_bytes=unet_bytes + 1)._checkpoint_too_large(path, probe.precision) is False


def test_a_t5_over_budget_streams_from_its_file_with_the_same_encoding(tiny_models, tmp_path):
    """An fp16 T5-XXL file computed in fp32: left in the mapped file, each block cast as it runs (transformers'
    T5 reads its weights' dtype inside a block), the prompt's encoding equal to the ordinary load's."""
    from model_management.file_loading import load_state_dict as read
    t5 = str(tmp_path / "t5xxl_fp16.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in read(tiny_models.sd3("t5xxl")).items()}, t5)
    clip_l = tiny_models.sd3("clip_l")
    regular = ModelResidency(ram_budget_bytes=1 << 40).load_text_encoders([t5, clip_l], "flux")
    models = ModelResidency(ram_budget_bytes=stored_bytes(t5, lambda d: torch.float32) // 2)
    streamed = models.load_text_encoders([t5, clip_l], "flux")
    module = streamed.stack.encoder("t5xxl").model
    stream = host_stream_of(module)
    assert stream is not None and stream.streamed
    assert module.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.float16  # kept as stored
    expected = regular.encode("a lighthouse at dusk")
    got = streamed.encode("a lighthouse at dusk")
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    from model_management.residency import module_bytes
    clip_bytes = module_bytes(streamed.stack.encoder("clip_l"))
    assert stream.forwards > 0 and models.resident_bytes() == clip_bytes + stream.resident_bytes()
    assert stream.resident_bytes() < stream.owned_bytes + stream.kept_bytes + stream.streamed_bytes
