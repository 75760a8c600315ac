"""T2I-adapters: every layout against diffusers' T2IAdapter with identical random weights, and the UNet placement."""
import pytest
import torch
from diffusers import T2IAdapter
from safetensors.torch import load_file, save_file

from diffusion.controlnet.t2i_adapter import build_adapter, feature_targets, is_t2i_adapter
from diffusion.unet import sd15_config, sdxl_base_config
from model_management.checkpoints import load_checkpoint

CH = [32, 64, 128, 128]


def _reference(adapter_type, in_channels=3, channels=CH, num_res_blocks=2, downscale_factor=8, seed=0):
    torch.manual_seed(seed)
    ref = T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=num_res_blocks,
                     downscale_factor=downscale_factor, adapter_type=adapter_type).eval()
    with torch.no_grad():
        for p in ref.parameters():  # weights well away from the default init, biases included
            p.copy_(torch.randn_like(p) * 0.1)
    return ref


def _roundtrip(sd, tmp_path):
    """Through a real safetensors file, as the loader gets it."""
    path = tmp_path / "adapter.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return load_file(str(path))


def _check(ref, sd, hint, ref_hint=None):
    ours = build_adapter(sd)
    with torch.no_grad():
        want = ref(hint if ref_hint is None else ref_hint)
    got = ours.features(hint, torch.device("cpu"), torch.float32)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert (g - w).abs().max().item() <= 1e-4 * max(1.0, w.abs().max().item())
    return ours


def test_diffusers_full_adapter_matches(tmp_path):
    ref = _reference("full_adapter")
    sd = _roundtrip(ref.state_dict(), tmp_path)
    assert is_t2i_adapter(sd)
    ours = _check(ref, sd, torch.rand(2, 3, 128, 96))
    assert ours.family == "sd1" and ours.kind == "full"


def test_diffusers_full_adapter_xl_matches(tmp_path):
    ref = _reference("full_adapter_xl", downscale_factor=16)
    sd = _roundtrip(ref.state_dict(), tmp_path)
    ours = _check(ref, sd, torch.rand(1, 3, 128, 160))
    assert ours.family == "sdxl"


def test_diffusers_light_adapter_matches(tmp_path):
    ref = _reference("light_adapter", channels=[32, 64, 128], num_res_blocks=4)
    sd = _roundtrip(ref.state_dict(), tmp_path)
    assert is_t2i_adapter(sd)
    ours = _check(ref, sd, torch.rand(1, 3, 128, 128))
    assert ours.kind == "light" and len(ours.net.body) == 4


def test_grayscale_adapter_averages_an_rgb_hint(tmp_path):
    ref = _reference("full_adapter", in_channels=1)
    hint = torch.rand(1, 3, 64, 64)
    _check(ref, _roundtrip(ref.state_dict(), tmp_path), hint, ref_hint=hint.mean(dim=1, keepdim=True))


def _to_original_full(diffusers_sd, per_level=2):
    """diffusers -> TencentARC keys, written out by hand: adapter.body.i.resnets.j -> body.{2i+j};
    the level's in_conv belongs to its first ResBlock."""
    out = {}
    for key, value in diffusers_sd.items():
        parts = key.split(".")
        assert parts[0] == "adapter"
        if parts[1] == "conv_in":
            out[".".join(parts[1:])] = value
        elif parts[3] == "resnets":
            out[f"body.{int(parts[2]) * per_level + int(parts[4])}." + ".".join(parts[5:])] = value
        elif parts[3] == "in_conv":
            out[f"body.{int(parts[2]) * per_level}.in_conv." + ".".join(parts[4:])] = value
        else:
            raise AssertionError(key)
    return out


def test_original_layouts_match(tmp_path):
    ref = _reference("full_adapter")
    original = _to_original_full(ref.state_dict())
    assert "body.2.in_conv.weight" in original and "body.3.block2.bias" in original
    hint = torch.rand(1, 3, 64, 64)
    _check(ref, _roundtrip(original, tmp_path), hint)
    # the same under an `adapter.` prefix, and inside an {"adapter": ...} wrapper (old .pth files)
    _check(ref, {f"adapter.{k}": v for k, v in original.items()}, hint)
    _check(ref, {"adapter": original}, hint)

    xl = _reference("full_adapter_xl", downscale_factor=16, seed=1)
    _check(xl, _roundtrip(_to_original_full(xl.state_dict()), tmp_path), torch.rand(1, 3, 64, 64))

    light = _reference("light_adapter", channels=[32, 64, 128], num_res_blocks=2, seed=2)
    renamed = {k.replace("adapter.", "", 1).replace(".resnets.", ".body."): v for k, v in light.state_dict().items()}
    assert "body.0.body.1.block2.weight" in renamed
    _check(light, _roundtrip(renamed, tmp_path), torch.rand(1, 3, 64, 64))


def test_original_conv_downsampler_and_skip_conv():
    """`down_opt.op` (3x3 stride-2 conv) and `skep` (skip conv) keys are honoured, not ignored."""
    ref = _reference("full_adapter", channels=[32, 64])
    sd = _to_original_full(ref.state_dict())
    torch.manual_seed(3)
    sd["body.2.down_opt.op.weight"] = torch.randn(32, 32, 3, 3) * 0.1
    sd["body.2.down_opt.op.bias"] = torch.randn(32) * 0.1
    sd["body.1.skep.weight"] = torch.randn(32, 32, 1, 1) * 0.1
    sd["body.1.skep.bias"] = torch.randn(32) * 0.1
    ours = build_adapter(sd)
    hint = torch.rand(1, 3, 64, 64)
    got = ours.features(hint, torch.device("cpu"), torch.float32)

    # by hand from the published block: [down] -> [in_conv] -> block2(relu(block1(x))) + (skep(x) or x)
    F = torch.nn.functional

    def conv(x, name, stride=1):
        w = sd[f"{name}.weight"]
        return F.conv2d(x, w, sd[f"{name}.bias"], stride=stride, padding=w.shape[-1] // 2)

    x = conv(F.pixel_unshuffle(hint, 8), "conv_in")
    x = x + conv(F.relu(conv(x, "body.0.block1")), "body.0.block2")
    x = conv(x, "body.1.skep") + conv(F.relu(conv(x, "body.1.block1")), "body.1.block2")
    first = x
    x = conv(conv(x, "body.2.down_opt.op", stride=2), "body.2.in_conv")
    x = x + conv(F.relu(conv(x, "body.2.block1")), "body.2.block2")
    x = x + conv(F.relu(conv(x, "body.3.block1")), "body.3.block2")
    torch.testing.assert_close(got[0], first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], x, atol=1e-5, rtol=1e-5)


def test_feature_placement_follows_the_unet_levels():
    # SD1.x: after the last input block of each level (the original T2I code's (id + 1) % 3 == 0)
    assert feature_targets(sd15_config(), [(320, 0), (640, 1), (1280, 2), (1280, 3)]) == [2, 5, 8, 11]
    # SDXL: 320 at half size fits only the first downsampler; the fourth feature has no block left -> middle
    assert feature_targets(sdxl_base_config(), [(320, 1), (640, 1), (1280, 2), (1280, 2)]) == [3, 5, 8, "middle"]
    with pytest.raises(ValueError, match="fits no input block"):
        feature_targets(sd15_config(), [(320, 1), (640, 1), (1280, 2), (1280, 2)])  # an XL adapter on SD1


def _full_size(adapter_type, downscale_factor):
    """A released-size adapter's state dict (shapes only matter here; the values are left uninitialised)."""
    with torch.device("meta"):
        ref = T2IAdapter(channels=[320, 640, 1280, 1280], downscale_factor=downscale_factor, adapter_type=adapter_type)
    return {k: torch.empty(v.shape) for k, v in ref.state_dict().items()}


def test_adapter_feature_shapes_name_those_placements():
    full = build_adapter(_full_size("full_adapter", 8))
    xl = build_adapter(_full_size("full_adapter_xl", 16))
    for ours, cfg, want in ((full, sd15_config(), [2, 5, 8, 11]), (xl, sdxl_base_config(), [3, 5, 8, "middle"])):
        shapes = [(c, d + ours.latent_shift) for c, d in zip(ours.net.feature_channels, ours.net.feature_downs)]
        assert feature_targets(cfg, shapes) == want


def _sd1_model(tiny_models):
    """The tiny SD1 MODEL (32/64/64 wide, three levels) from a real checkpoint file."""
    return load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False).model


def test_compute_feeds_the_unet_and_caches_per_hint(tiny_models):
    model = _sd1_model(tiny_models)
    unet, cfg = model.unet, model.unet.config
    ref = _reference("full_adapter", channels=[32, 64, 64])
    ours = build_adapter(ref.state_dict())
    x = torch.randn(2, 4, 12, 10)
    hint = torch.rand(2, 3, 96, 80)
    t = torch.tensor([500.0, 500.0])
    ctx = torch.randn(2, 7, cfg.context_dim)
    control = ours.compute(x, t, ctx, None, hint, model)
    assert [i for i, r in enumerate(control["input"]) if r is not None] == [2, 5, 8]
    assert len(control["input"]) == cfg.num_input_blocks and "middle" not in control
    with torch.no_grad():
        feats = ref(hint)
    for idx, feat in zip([2, 5, 8], feats):
        torch.testing.assert_close(control["input"][idx], feat, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        plain, guided = unet(x, t, ctx), unet(x, t, ctx, control=control)
    assert guided.shape == plain.shape and (guided - plain).abs().max() > 1e-3

    first = ours.features(hint, torch.device("cpu"), torch.float32)
    assert ours.features(hint.clone(), torch.device("cpu"), torch.float32) is first  # equal hint: cached
    assert ours.features(hint, torch.device("cpu"), torch.float32) is first  # the very same tensor: cached
    hint.mul_(0.5)  # the cached tensor changed in place: computed anew, not served stale
    halved = ours.features(hint, torch.device("cpu"), torch.float32)
    assert halved is not first
    with torch.no_grad():
        torch.testing.assert_close(halved[0], ref(hint)[0], atol=1e-4, rtol=1e-4)
    other = ours.features(hint.flip(-1), torch.device("cpu"), torch.float32)
    assert other is not halved and not torch.equal(other[0], halved[0])


def test_odd_latent_sizes_and_batch_broadcast(tiny_models):
    model = _sd1_model(tiny_models)
    unet, cfg = model.unet, model.unet.config
    ours = build_adapter(_reference("full_adapter", channels=[32, 64, 64]).state_dict())
    x = torch.randn(4, 4, 9, 7)  # 9 -> 5 -> 3 through the UNet's stride-2 convs
    control = ours.compute(x, torch.full((4,), 10.0), torch.randn(4, 3, cfg.context_dim), None,
                           torch.rand(2, 3, 72, 56), model)
    assert [tuple(control["input"][i].shape) for i in (2, 5, 8)] == [(4, 32, 9, 7), (4, 64, 5, 4), (4, 64, 3, 2)]
    torch.testing.assert_close(control["input"][2][:2], control["input"][2][2:])
    with torch.no_grad():
        unet(x, torch.full((4,), 10.0), torch.randn(4, 3, cfg.context_dim), control=control)


def test_bad_files_are_refused_clearly():
    assert not is_t2i_adapter({"input_hint_block.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not a T2I-adapter"):
        build_adapter({"input_hint_block.0.weight": torch.zeros(1)})
    sd = dict(_reference("full_adapter", channels=[32, 64]).state_dict())
    sd["adapter.conv_in.weight"] = torch.zeros(32, 100, 3, 3)
    with pytest.raises(ValueError, match="conv_in reads 100 channels"):
        build_adapter(sd)
    sd = _to_original_full(_reference("full_adapter", channels=[32, 64]).state_dict())
    del sd["body.3.block1.bias"]
    with pytest.raises(ValueError, match="do not match"):
        build_adapter(sd)


def test_the_controlnet_loader_dispatches_adapter_files(tmp_path):
    from model_management.control_files import load_control_model
    ref = _reference("full_adapter", channels=[32, 64])
    path = tmp_path / "t2iadapter_canny.safetensors"
    save_file({k: v.contiguous() for k, v in _to_original_full(ref.state_dict()).items()}, str(path))
    control = load_control_model(str(path))
    assert type(control).__name__ == "T2IAdapterControl" and control.family == "sd1"
    hint = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        want = ref(hint)
    torch.testing.assert_close(control.features(hint, torch.device("cpu"), torch.float32)[1], want[1],
                               atol=1e-4, rtol=1e-4)
