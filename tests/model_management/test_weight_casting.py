"""UNETLoader's weight_dtype: weights kept in fp8, each layer computing in the compute dtype, cast at forward."""
import os
import uuid

import torch

from execution.caches import NoCache
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from model_management.checkpoints import load_unet_file
from model_management.residency import ModelResidency
from model_management.services import Services
from model_management.weight_casting import store_in
from nodes import builtin_catalogue


def unet_file(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file
    state = load_file(tiny_models.checkpoint("sd1"))
    path = str(tmp_path / "bare_unet.safetensors")
    save_file({k[len("model.diffusion_model."):]: v for k, v in state.items()
               if k.startswith("model.diffusion_model.")}, path)
    return path


def inputs(unet):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, unet.config.in_channels, 8, 8, generator=gen)
    context = torch.randn(2, 77, unet.config.context_dim, generator=gen)
    return x, torch.tensor([400.0, 400.0]), context


def test_fp8_storage_computes_like_fp32_on_the_rounded_weights(tiny_models, tmp_path):
    path = unet_file(tiny_models, tmp_path)
    reference = load_unet_file(path).unet
    stored = store_in(load_unet_file(path).unet, torch.float8_e4m3fn, torch.float32)
    linears = [m for m in stored.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert stored.dtype == torch.float32  # what the network casts its activations to
    x, t, context = inputs(reference)
    with torch.no_grad():
        ours = stored(x, t, context)
        # the same network with its weights rounded to fp8 and kept in fp32: the per-layer cast is exact
        for module in reference.modules():
            for key, value in module._parameters.items():
                if value is not None and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm,
                                                             torch.nn.LayerNorm)):
                    value.data = value.data.to(torch.float8_e4m3fn).float()
        expected = reference(x, t, context)
    assert ours.dtype == torch.float32 and torch.equal(ours, expected)
    # after the forward every layer holds its fp8 tensors again (no cast copy left behind)
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    held = sum(p.numel() * p.element_size() for p in stored.parameters())
    full = sum(p.numel() * p.element_size() for p in load_unet_file(path).unet.parameters())
    assert held < 0.3 * full


def test_a_failing_forward_still_puts_the_stored_weights_back(tiny_models, tmp_path):
    stored = store_in(load_unet_file(unet_file(tiny_models, tmp_path)).unet, torch.float8_e5m2, torch.float32)
    x, t, context = inputs(stored)
    try:
        stored(x, t, context[:, :, :3])  # wrong context width: fails inside the first cross-attention
    except RuntimeError:
        pass
    assert all(p.dtype == torch.float8_e5m2 for m in stored.modules() if isinstance(m, torch.nn.Linear)
               for p in m.parameters(recurse=False) if p.dim() == 2)


def test_unet_loader_weight_dtype_through_the_engine(tiny_models, tmp_path):
    services = Services.for_directory(str(tmp_path))
    services.models = ModelResidency()
    os.symlink(unet_file(tiny_models, tmp_path), os.path.join(services.paths.folder_paths("unet")[0], "u.safetensors"))
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(services.paths.folder_paths("checkpoints")[0],
                                                           "c.safetensors"))
    executor = Executor(builtin_catalogue(), NoCache(), services)
    info = executor.catalogue.object_info(services, only="UNETLoader")["UNETLoader"]["input"]["required"]
    assert info["weight_dtype"][0] == ["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]

    def run(weight_dtype):
        prompt = {
            "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "u.safetensors", "weight_dtype": weight_dtype}},
            "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "c.safetensors"}},
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a boat", "clip": ["ckpt", 1]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
            "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "sample": {"class_type": "KSampler", "inputs": {
                "model": ["unet", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
                "seed": 3, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
            "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sample", 0], "filename_prefix": weight_dtype}},
        }
        checked = validate_prompt(prompt, executor.catalogue, None, services)
        assert checked.ok, checked.node_errors
        outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order))
        assert outcome.status == "success", outcome.error
        from safetensors.torch import load_file
        found = [os.path.join(r, f) for r, _, n in os.walk(services.paths.output_dir) for f in n
                 if f.startswith(weight_dtype) and f.endswith(".latent")]
        assert len(found) == 1, found
        return load_file(found[0])["latent_tensor"]

    plain, fp8, fp8_fast = run("default"), run("fp8_e4m3fn"), run("fp8_e4m3fn_fast")
    assert services.models.file_reads == 3  # the checkpoint, the UNet as stored, the UNet in fp8 (_fast shares it)
    assert not torch.equal(plain, fp8) and torch.equal(fp8, fp8_fast)  # on a CPU _fast is the same storage
    change = float((plain - fp8).pow(2).mean().sqrt() / plain.pow(2).mean().sqrt())
    assert change < 0.25, change  # fp8 rounding of the weights, not another model
