"""Control-LoRA: a file holding only low-rank deltas + ControlNet-only layers, built against the MODEL's UNet,
gives exactly the residuals of the full ControlNet whose encoder weights are UNet + delta."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffusion.controlnet.control_lora import MARKER, build_control_lora, is_control_lora
from model_management.control_files import control_model_from_state_dict
from diffusion.controlnet.model import ControlNet, controlnet_config_from_unet
from model_management.checkpoints import load_checkpoint

RANK = 4
ONLY_CONTROLNET = ("input_hint_block.", "zero_convs.", "middle_block_out.")


def _make_pair(unet, seed=0):
    """(full ControlNet with weights UNet W + up@down, control-LoRA state dict storing only up/down + the rest)."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen) * 0.05  # noqa: E731
    net = ControlNet(controlnet_config_from_unet(unet.config)).eval()
    unet_sd = unet.state_dict()
    full, lora = {}, {MARKER: torch.tensor([])}
    for key, value in net.state_dict().items():
        module = key.rsplit(".", 1)[0]
        if key.startswith(ONLY_CONTROLNET):
            full[key] = rand(*value.shape)
            lora[key] = full[key]
        elif key.endswith(".weight") and value.ndim >= 2:  # a copied conv/linear: UNet weight + low-rank delta
            w = unet_sd[key]
            up = rand(w.shape[0], RANK, *([1, 1] if w.ndim == 4 else []))
            down = rand(RANK, *w.shape[1:])
            full[key] = w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
            lora[f"{module}.up"], lora[f"{module}.down"] = up, down
        else:  # norms and biases of the copied layers: stored in full, and different from the UNet's
            full[key] = unet_sd[key] + rand(*value.shape)
            lora[key] = full[key]
    net.load_state_dict(full)
    return net, lora


def _write(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return load_file(str(path))


def _inputs(model, batch=2, h=8, w=6, seed=1):
    cfg = model.unet.config
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, h, w, generator=gen)
    hint = torch.rand(batch, 3, 8 * h, 8 * w, generator=gen)
    t = torch.tensor([700.0, 120.0][:batch])
    ctx = torch.randn(batch, 5, cfg.context_dim, generator=gen)
    y = torch.randn(batch, cfg.adm_in_channels, generator=gen) if cfg.adm_in_channels else None
    return x, t, ctx, y, hint


def _assert_same(got, want):
    assert len(got["output"]) == len(want["output"]) and len(got["middle"]) == 1
    for g, w in zip(got["output"] + got["middle"], want["output"] + want["middle"]):
        assert (g - w).abs().max().item() <= 1e-5 * max(1.0, w.abs().max().item())


@pytest.mark.parametrize("family", ["sdxl", "sd1"])
def test_control_lora_equals_the_full_controlnet(tmp_path, tiny_models, family):
    model = load_checkpoint(tiny_models.checkpoint(family), want_clip=False, want_vae=False).model
    reference, lora_sd = _make_pair(model.unet)
    sd = _write(lora_sd, tmp_path / "control-lora.safetensors")
    assert is_control_lora(sd) and not any(k.endswith(".weight") and k.startswith("input_blocks.1.0.in_layers.2")
                                           for k in sd)  # the copied conv weight really is not stored
    control = control_model_from_state_dict(sd, source=str(tmp_path / "control-lora.safetensors"))
    assert type(control).__name__ == "ControlLoraControl"
    assert control.family == family

    x, t, ctx, y, hint = _inputs(model)
    got = control.compute(x, t, ctx, y, hint, model)
    with torch.no_grad():
        want = reference(x, hint, t, ctx, y)
    _assert_same(got, want)
    # the UNet's own weights are untouched (the ControlNet holds copies)
    base = load_checkpoint(tiny_models.checkpoint(family), want_clip=False, want_vae=False).model.unet.state_dict()
    for key, value in model.unet.state_dict().items():
        assert torch.equal(value, base[key]), key


def test_built_once_per_model_and_rebuilt_for_another(tmp_path, tiny_models):
    model = load_checkpoint(tiny_models.checkpoint("sdxl"), want_clip=False, want_vae=False).model
    _, lora_sd = _make_pair(model.unet)
    control = build_control_lora(_write(lora_sd, tmp_path / "cl.safetensors"))
    x, t, ctx, y, hint = _inputs(model)
    first = control.controlnet_for(model)
    control.compute(x, t, ctx, y, hint, model)
    assert control.controlnet_for(model) is first
    assert control.controlnet_for(model.clone()) is first  # a clone shares the UNet and its (empty) patch list

    other = load_checkpoint(tiny_models.checkpoint("sdxl"), want_clip=False, want_vae=False).model
    with torch.no_grad():
        for p in other.unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert control.controlnet_for(other) is not first
    a = control.compute(x, t, ctx, y, hint, model)
    b = control.compute(x, t, ctx, y, hint, other)
    assert (a["output"][1] - b["output"][1]).abs().max() > 1e-4  # the base weights really come from the MODEL

    patched = model.with_patches([("input_blocks.1.0.in_layers.2.weight", object(), 1.0)])
    assert control.controlnet_for(patched) is not control.controlnet_for(model)


def test_wrong_model_and_broken_files_fail_clearly(tmp_path, tiny_models):
    sdxl = load_checkpoint(tiny_models.checkpoint("sdxl"), want_clip=False, want_vae=False).model
    sd1 = load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False).model
    _, lora_sd = _make_pair(sdxl.unet)
    control = build_control_lora(lora_sd)
    with pytest.raises(ValueError, match="control-LoRA"):
        control.compute(*_inputs(sd1), sd1)

    broken = dict(lora_sd)
    del broken["input_blocks.1.0.in_layers.2.down"]
    with pytest.raises(ValueError, match="without its down half"):
        build_control_lora(broken).compute(*_inputs(sdxl), sdxl)

    with pytest.raises(ValueError, match="lora_controlnet"):
        build_control_lora({"input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)})
    assert not is_control_lora({"input_hint_block.0.weight": torch.zeros(1)})
