"""Loading ControlNets from real files: single-file and diffusers layouts agree, diff ControlNets, safe pickles,
format dispatch and clear errors."""
import os
import types

import pytest
import torch
from safetensors.torch import save_file

from model_management import control_files as loader
from model_management.control_files import load_control_model
from diffusion.controlnet.model import ControlNetControl, detect_controlnet_config
from model_management.synthetic_controlnets import make_controlnet, write_controlnet
from diffusion.unet.config import TINY_SDXL_POOLED_DIM


def _batch(net, size=(6, 5), seed=0):
    cfg = net.config.unet
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, cfg.in_channels, *size, generator=g)
    hint = torch.rand(2, 3, size[0] * 8, size[1] * 8, generator=g)
    ctx = torch.randn(2, 5, cfg.context_dim, generator=g)
    y = torch.randn(2, cfg.adm_in_channels, generator=g) if cfg.adm_in_channels else None
    return x, hint, torch.tensor([5.0, 500.0]), ctx, y


def _residuals(control, seed=0):
    net = control.network
    with torch.no_grad():
        out = net(*_batch(net, seed=seed))
    return out["output"] + out["middle"]


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_all_file_layouts_give_identical_residuals(tmp_path, family):
    paths = {layout: write_controlnet(str(tmp_path / f"{layout}.safetensors"), family, layout=layout, seed=7)
             for layout in ("ldm", "ldm_bare", "diffusers")}
    loaded = {layout: load_control_model(path) for layout, path in paths.items()}
    for control in loaded.values():
        assert isinstance(control, ControlNetControl) and control.family == family
    ref = _residuals(loaded["ldm"])
    assert all(r.abs().max() > 0 for r in ref)
    for layout in ("ldm_bare", "diffusers"):
        got = _residuals(loaded[layout])
        assert all(torch.equal(a, b) for a, b in zip(ref, got)), layout
    # a different seed is a different network (the comparison above can fail)
    other = load_control_model(write_controlnet(str(tmp_path / "other.safetensors"), family, seed=8))
    assert not torch.equal(_residuals(other)[0], ref[0])


def test_config_is_read_from_shapes():
    cfg = detect_controlnet_config(make_controlnet("sdxl"))
    assert cfg.unet.adm_in_channels == TINY_SDXL_POOLED_DIM + 6 * 256
    assert cfg.unet.context_dim == 128 and cfg.unet.use_linear_in_transformer
    assert cfg.unet.num_input_blocks == 6 and cfg.hint_widths == (16, 16, 32, 32, 96, 96, 256)
    assert cfg.hint_strides == (1, 1, 2, 1, 2, 1, 2, 1)
    sd1 = detect_controlnet_config(make_controlnet("sd1", layout="ldm_bare"))
    assert sd1.family == "sd1" and not sd1.unet.use_linear_in_transformer and sd1.unet.context_dim == 64


def test_pth_loads_through_weights_only_and_code_is_refused(tmp_path):
    state = make_controlnet("sd1", seed=2)
    path = tmp_path / "cn.pth"
    torch.save({"state_dict": state}, path)
    from_pth = load_control_model(str(path))
    from_st = load_control_model(write_controlnet(str(tmp_path / "cn.safetensors"), "sd1", seed=2))
    assert all(torch.equal(a, b) for a, b in zip(_residuals(from_pth), _residuals(from_st)))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(Exception, match="refused"):
        load_control_model(str(bad))


def test_diff_controlnet_adds_the_models_weights(tmp_path, tiny_sd1_model):
    base = tiny_sd1_model.unet.state_dict()
    full = make_controlnet("sd1", seed=4)
    diff = make_controlnet("sd1", seed=4, difference_from=base)
    assert "difference" in diff
    shared = "control_model.input_blocks.1.0.in_layers.2.weight"
    assert not torch.equal(diff[shared], full[shared])
    path = str(tmp_path / "diff.safetensors")
    save_file(diff, path)
    with pytest.raises(ValueError, match="DiffControlNetLoader"):
        load_control_model(path)
    restored = load_control_model(path, model=tiny_sd1_model)
    reference = loader.control_model_from_state_dict(full)
    for a, b in zip(_residuals(restored), _residuals(reference)):  # (w - base) + base rounds in float32
        assert (a - b).abs().max() <= 1e-4 * max(1.0, float(b.abs().max()))


def test_not_a_controlnet_is_named(tmp_path):
    path = str(tmp_path / "lora.safetensors")
    save_file({"lora_unet_down_blocks_0.lora_up.weight": torch.zeros(4, 4)}, path)
    with pytest.raises(ValueError, match="not a ControlNet.*LoRA"):
        load_control_model(path)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = write_controlnet(str(tmp_path / "cut.safetensors"), "sd1")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 1000)
    with pytest.raises(Exception, match="truncated"):
        load_control_model(path)


def test_other_formats_are_dispatched_first(monkeypatch):
    """Control-LoRA and T2I-adapter probes see a state dict before the ControlNet layouts do."""
    seen = []
    fake = types.SimpleNamespace(is_t2i_adapter=lambda sd: "marker" in sd,
                                 build_adapter=lambda sd, source="": seen.append(sorted(sd)) or "adapter")
    monkeypatch.setattr(loader, "t2i_adapter", fake)
    assert loader.control_model_from_state_dict({"marker": torch.zeros(1)}) == "adapter"
    assert isinstance(loader.control_model_from_state_dict(make_controlnet("sd1")), ControlNetControl)
    assert seen == [["marker"]]
    with pytest.raises(ValueError, match="is not a ControlNet, T2I-adapter or control-LoRA"):
        loader.control_model_from_state_dict({"something.else": torch.zeros(1)})
