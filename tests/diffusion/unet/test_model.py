"""UNetModel: LDM key layout, exact full-size parameter counts, control residual hook, loader, call conventions."""
import pytest
import torch

from diffusion.unet import (UNET_PREFIX, UNetModel, sd15_config, sd21_config, sdxl_base_config,
                            timestep_embedding, tiny_sd1_config, tiny_sdxl_config, unet_from_state_dict)


def meta_model(cfg):
    with torch.device("meta"):
        return UNetModel(cfg)


@pytest.mark.parametrize("make, params, keys", [
    (sd15_config, 859_520_964, 686),
    (sd21_config, 865_910_724, 686),
    (sdxl_base_config, 2_567_463_684, 1680),
], ids=["sd15", "sd21", "sdxl"])
def test_full_size_parameter_counts(make, params, keys):
    model = meta_model(make())
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_ldm_key_layout():
    sd = {k: tuple(v.shape) for k, v in meta_model(sd15_config()).state_dict().items()}
    assert sd["time_embed.0.weight"] == (1280, 320) and sd["time_embed.2.weight"] == (1280, 1280)
    assert sd["input_blocks.0.0.weight"] == (320, 4, 3, 3)
    assert sd["input_blocks.1.0.in_layers.2.weight"] == (320, 320, 3, 3)
    assert sd["input_blocks.1.0.emb_layers.1.weight"] == (320, 1280)
    assert sd["input_blocks.1.0.out_layers.0.weight"] == (320,)
    assert sd["input_blocks.4.0.skip_connection.weight"] == (640, 320, 1, 1)
    assert sd["input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)  # SD1: conv proj_in
    assert sd["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd["input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"] == (2560, 320)
    assert sd["input_blocks.1.1.transformer_blocks.0.ff.net.2.weight"] == (320, 1280)
    assert sd["input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias"] == (320,)
    assert "input_blocks.1.1.transformer_blocks.0.attn1.to_q.bias" not in sd
    assert sd["input_blocks.3.0.op.weight"] == (320, 320, 3, 3)
    assert sd["middle_block.1.norm.weight"] == (1280,)
    assert sd["output_blocks.0.0.skip_connection.weight"] == (1280, 2560, 1, 1)
    assert sd["output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)
    assert sd["output_blocks.5.2.conv.weight"] == (1280, 1280, 3, 3)
    assert sd["out.0.weight"] == (320,) and sd["out.2.weight"] == (4, 320, 3, 3)
    xl = {k: tuple(v.shape) for k, v in meta_model(sdxl_base_config()).state_dict().items()}
    assert xl["label_emb.0.0.weight"] == (1280, 2816) and xl["label_emb.0.2.weight"] == (1280, 1280)
    assert xl["input_blocks.4.1.proj_in.weight"] == (640, 640)  # SDXL: linear proj_in
    assert "input_blocks.1.1.norm.weight" not in xl  # depth-0 first level


def _inputs(cfg, b=2, hw=(16, 16)):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(b, cfg.in_channels, *hw, generator=g)
    ctx = torch.randn(b, 5, cfg.context_dim, generator=g)
    y = torch.randn(b, cfg.adm_in_channels, generator=g) if cfg.adm_in_channels else None
    return x, torch.tensor([10.0, 900.0])[:b], ctx, y


class _Tap:
    """Records what each output block receives (the concat of h and its skip) and the middle block's output."""

    def __init__(self, model):
        self.model, self.out_in, self.handles = model, {}, []
        for j, block in enumerate(model.output_blocks):
            self.handles.append(block.register_forward_pre_hook(
                lambda m, args, j=j: self.out_in.__setitem__(j, args[0].clone())))
        self.handles.append(model.middle_block.register_forward_hook(
            lambda m, args, out: setattr(self, "middle", out.clone())))
        self.in_out = {}
        for i, block in enumerate(model.input_blocks):
            self.handles.append(block.register_forward_hook(
                lambda m, args, out, i=i: self.in_out.__setitem__(i, out.clone())))

    def run(self, *args, **kw):
        with torch.no_grad():
            return self.model(*args, **kw)


@pytest.fixture(scope="module")
def tapped():
    torch.manual_seed(0)
    cfg = tiny_sdxl_config()
    return cfg, _Tap(UNetModel(cfg).eval())


def test_control_output_residual_lands_on_its_skip(tapped):
    cfg, tap = tapped
    n = cfg.num_input_blocks
    x, t, ctx, y = _inputs(cfg)
    base_out = tap.run(x, t, ctx, y=y)
    base = dict(tap.out_in)
    for i in range(n):
        skip = tap.in_out[i]
        r = torch.randn_like(skip)
        ctrl = {"output": [None] * n}
        ctrl["output"][i] = r
        tap.run(x, t, ctx, y=y, control=ctrl)
        j = n - 1 - i  # output block j pops skip i
        for k in range(j):  # blocks before it are untouched
            assert torch.equal(tap.out_in[k], base[k])
        c = skip.shape[1]
        assert torch.equal(tap.out_in[j][:, :-c], base[j][:, :-c])  # h part unchanged
        torch.testing.assert_close(tap.out_in[j][:, -c:], base[j][:, -c:] + r)  # skip part + residual
    zeros = {"input": [torch.zeros_like(tap.in_out[i]) for i in range(n)],
             "middle": [torch.zeros_like(tap.middle)], "output": [torch.zeros_like(tap.in_out[i]) for i in range(n)]}
    assert torch.equal(tap.run(x, t, ctx, y=y, control=zeros), base_out)


def test_control_middle_and_input(tapped):
    cfg, tap = tapped
    n = cfg.num_input_blocks
    x, t, ctx, y = _inputs(cfg)
    tap.run(x, t, ctx, y=y)
    middle, first_in, in_out = tap.middle, tap.out_in[0], dict(tap.in_out)
    r = torch.randn_like(middle)
    tap.run(x, t, ctx, y=y, control={"middle": r})
    c = in_out[n - 1].shape[1]
    torch.testing.assert_close(tap.out_in[0][:, :-c], first_in[:, :-c] + r)
    assert torch.equal(tap.out_in[0][:, -c:], first_in[:, -c:])
    # input[i] changes block i's stored skip (seen by output block n-1-i) and everything after it
    i = 2
    r = torch.randn_like(in_out[i])
    ctrl = {"input": [None] * n}
    ctrl["input"][i] = r
    tap.run(x, t, ctx, y=y, control=ctrl)
    for k in range(i):
        assert torch.equal(tap.in_out[k], in_out[k])
    assert torch.equal(tap.in_out[i], in_out[i])  # the hook sees the block's own output, before the residual
    j = n - 1 - i
    torch.testing.assert_close(tap.out_in[j][:, -r.shape[1]:], in_out[i] + r)
    assert not torch.equal(tap.in_out[i + 1], in_out[i + 1])


def test_control_lists_must_cover_every_input_block(tapped):
    cfg, tap = tapped
    x, t, ctx, y = _inputs(cfg)
    with pytest.raises(ValueError, match="input blocks"):
        tap.run(x, t, ctx, y=y, control={"output": [None] * (cfg.num_input_blocks - 1)})
    ctrl = {"output": [None] * cfg.num_input_blocks}
    tap.run(x, t, ctx, y=y, control=ctrl)
    assert ctrl["output"] == [None] * cfg.num_input_blocks  # the caller's lists are not consumed


def test_loader_round_trip_and_dtype():
    cfg = tiny_sd1_config()
    torch.manual_seed(0)
    model = UNetModel(cfg).eval()
    ckpt = {UNET_PREFIX + k: v for k, v in model.state_dict().items()}
    ckpt["first_stage_model.encoder.conv_in.weight"] = torch.zeros(1)
    loaded = unet_from_state_dict(ckpt)
    assert loaded.config == cfg
    x, t, ctx, _ = _inputs(cfg)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ctx), model(x, t, ctx))
        half = unet_from_state_dict(ckpt, dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16
        out = half(x, t, ctx)  # fp32 in, fp32 out; computed in bf16
        assert out.dtype == torch.float32
        assert (out - model(x, t, ctx)).abs().max() < 0.1
    bad = dict(ckpt)
    bad[UNET_PREFIX + "out.2.weight"] = torch.zeros(4, 64, 3, 3)
    with pytest.raises(Exception):
        unet_from_state_dict(bad)


def test_call_conventions():
    cfg = tiny_sdxl_config()
    torch.manual_seed(0)
    model = UNetModel(cfg).eval()
    x, t, ctx, y = _inputs(cfg)
    with torch.no_grad():
        same_t = model(x, torch.tensor([500.0, 500.0]), ctx, y=y)
        assert torch.equal(model(x, torch.tensor(500.0), ctx, y=y), same_t)
        assert torch.equal(model(x, 500.0, ctx, y=y), same_t)
        with pytest.raises(ValueError, match="y"):
            model(x, t, ctx)
        with pytest.raises(ValueError, match="timesteps"):
            model(x, torch.tensor([1.0, 2.0, 3.0]), ctx, y=y)
        odd = model(x[:, :, :7, :11], t, ctx, y=y)
    assert odd.shape == (2, 4, 7, 11)


def test_timestep_embedding_cos_first():
    emb = timestep_embedding(torch.tensor([0.0, 1.0]), 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(freqs), torch.sin(freqs)]))
    assert timestep_embedding(torch.tensor([3.0]), 7).shape == (1, 7)
