"""Hypernetworks: the `.pt` format parsed safely, applied to attention k/v contexts while the model is used."""
import os
import pickle

import pytest
import torch
import torch.nn.functional as F

from diffusion.unet.attention import CrossAttention
from model_management.checkpoints import load_checkpoint
from model_management.file_loading import ModelFileError, RefusedPickleError
from model_management.hypernetwork import installed, load_hypernetwork, parse_hypernetwork
from nodes.hypernetwork import HypernetworkLoader
from nodes.sampling import common_ksampler
from tests.nodes.test_model_nodes import ModelEngine


def mlp_state(width, structure=(1, 2, 1), layer_norm=False, seed=0):
    """Keys as the format stores them: linear.N over a Sequential of Linear [+ activation] [+ LayerNorm]."""
    gen = torch.Generator().manual_seed(seed)
    state, index = {}, 0
    dims = [int(width * m) for m in structure]
    for i in range(len(dims) - 1):
        state[f"linear.{index}.weight"] = torch.randn(dims[i + 1], dims[i], generator=gen) * 0.1
        state[f"linear.{index}.bias"] = torch.randn(dims[i + 1], generator=gen) * 0.1
        index += 1
        if i < len(dims) - 2:
            index += 1  # the activation module's slot
        if layer_norm:
            state[f"linear.{index}.weight"] = 1 + torch.randn(dims[i + 1], generator=gen) * 0.1
            state[f"linear.{index}.bias"] = torch.randn(dims[i + 1], generator=gen) * 0.1
            index += 1
    return state


def write_hypernetwork(path, widths, activation="relu", layer_norm=False):
    data = {"layer_structure": [1, 2, 1], "activation_func": activation, "is_layer_norm": layer_norm,
            "use_dropout": False, "activate_output": False, "name": "test-hn", "step": 100,
            "sd_checkpoint": "abc", "sd_checkpoint_name": "x"}
    for i, width in enumerate(widths):
        data[width] = [mlp_state(width, layer_norm=layer_norm, seed=2 * i),
                       mlp_state(width, layer_norm=layer_norm, seed=2 * i + 1)]
    torch.save(data, path)
    return data


def reference_mlp(state, x, activation, layer_norm):
    """The MLP written out by hand from its state dict."""
    keys = sorted({int(k.split(".")[1]) for k in state})
    linears = [i for i in keys if state[f"linear.{i}.weight"].dim() == 2]
    h = x
    for i in keys:
        w, b = state[f"linear.{i}.weight"], state[f"linear.{i}.bias"]
        if w.dim() == 2:
            h = h @ w.T + b
            if i != linears[-1]:
                h = activation(h)
        else:
            mean = h.mean(-1, keepdim=True)
            var = h.var(-1, unbiased=False, keepdim=True)
            h = (h - mean) / torch.sqrt(var + 1e-5) * w + b
    return h


@pytest.mark.parametrize("layer_norm", [False, True])
def test_attention_uses_transformed_k_and_v_contexts(tmp_path, layer_norm):
    path = str(tmp_path / "hn.pt")
    data = write_hypernetwork(path, [16, 24], layer_norm=layer_norm)
    network = load_hypernetwork(path)
    torch.manual_seed(1)
    attn = CrossAttention(query_dim=16, context_dim=24, heads=2, dim_head=8)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 7, 24)
    strength = 0.7
    with torch.no_grad(), installed(attn, [(network, strength)]):
        got = attn(x, context)
    k_ctx = context + strength * reference_mlp(data[24][0], context, F.relu, layer_norm)
    v_ctx = context + strength * reference_mlp(data[24][1], context, F.relu, layer_norm)
    with torch.no_grad():
        q = attn.to_q(x).view(2, 5, 2, 8).transpose(1, 2)
        k = attn.to_k(k_ctx).view(2, 7, 2, 8).transpose(1, 2)
        v = attn.to_v(v_ctx).view(2, 7, 2, 8).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1)
        expected = attn.to_out((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(got, expected, atol=1e-5)
    assert attn.context_hook is None  # removed on exit
    with torch.no_grad():
        assert not torch.allclose(attn(x, context), got)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no hypernetwork layers"):
        parse_hypernetwork({"activation_func": "relu"}, "empty.pt")
    with pytest.raises(ModelFileError, match="unknown activation_func 'wobble'"):
        parse_hypernetwork({"activation_func": "wobble", 8: [mlp_state(8), mlp_state(8)]}, "x.pt")
    with pytest.raises(ModelFileError, match="maps"):
        parse_hypernetwork({8: [mlp_state(16), mlp_state(16)]}, "x.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({320: Evil()}, f)
    with pytest.raises((RefusedPickleError, ModelFileError)):
        load_hypernetwork(str(evil))
    assert not (tmp_path / "pwned").exists()


def test_node_changes_sampling_and_strength_zero_is_identity(tmp_path, tiny_models):
    engine = ModelEngine(tmp_path)
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    unet = loaded.model.unet
    widths = sorted({m.to_k.in_features for m in unet.modules() if isinstance(m, CrossAttention)})
    write_hypernetwork(os.path.join(engine.models("hypernetworks"), "style.pt"), widths)

    class Ctx:
        services = engine.services

    before = {k: v.clone() for k, v in unet.state_dict().items()}
    (model,) = HypernetworkLoader().run(Ctx(), loaded.model, "style.pt", 1.0)
    (zero,) = HypernetworkLoader().run(Ctx(), loaded.model, "style.pt", 0.0)
    assert "hypernetworks" not in loaded.model.options  # the input MODEL is not changed
    cond = loaded.clip.encode("a cat")[0]
    pos = [[cond, {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    plain = common_ksampler(None, loaded.model, 3, 2, 2.0, "euler", "normal", pos, pos, latent)["samples"]
    hyper = common_ksampler(None, model, 3, 2, 2.0, "euler", "normal", pos, pos, latent)["samples"]
    off = common_ksampler(None, zero, 3, 2, 2.0, "euler", "normal", pos, pos, latent)["samples"]
    assert not torch.allclose(plain, hyper)
    assert torch.equal(plain, off)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    assert all(m.context_hook is None for m in unet.modules() if isinstance(m, CrossAttention))


def test_node_refuses_a_hypernetwork_for_another_family(tmp_path, tiny_models):
    engine = ModelEngine(tmp_path)
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    write_hypernetwork(os.path.join(engine.models("hypernetworks"), "other.pt"), [4096])

    class Ctx:
        services = engine.services

    with pytest.raises(ValueError, match="hypernetwork_name: other.pt .* another model family"):
        HypernetworkLoader().run(Ctx(), loaded.model, "other.pt", 1.0)


def test_hypernetwork_through_the_engine(tmp_path, tiny_models):
    engine = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(engine.models("checkpoints"), "sd1.safetensors"))
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    widths = sorted({m.to_k.in_features for m in loaded.model.unet.modules() if isinstance(m, CrossAttention)})
    write_hypernetwork(os.path.join(engine.models("hypernetworks"), "style.pt"), widths, activation="swish")
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
        "hn": {"class_type": "HypernetworkLoader", "inputs": {"model": ["ckpt", 0], "hypernetwork_name": "style.pt",
                                                              "strength": 0.8}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sample": {"class_type": "KSampler", "inputs": {"model": ["hn", 0], "seed": 1, "steps": 2, "cfg": 2.0,
                                                        "sampler_name": "euler", "scheduler": "normal",
                                                        "positive": ["pos", 0], "negative": ["pos", 0],
                                                        "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "hn"}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert len(outcome.outputs["save"]["images"]) == 1
