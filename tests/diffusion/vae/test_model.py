"""AutoencoderKL against diffusers (loaded through diffusers' own LDM converter) with random weights."""
import pytest
import torch

import diffusion.vae.model as vae_model
from diffusion.vae import AutoencoderKL, sd_vae_config, tiny_vae_config
from tests.diffusion.vae.helpers import diffusers_twin, random_vae

TOL = 1e-4


def test_sd_vae_layout():
    vae = AutoencoderKL(sd_vae_config())
    sd = vae.state_dict()
    assert len(sd) == 248
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # the published SD VAE size
    for key, shape in [
        ("encoder.conv_in.weight", (128, 3, 3, 3)),
        ("encoder.down.0.block.1.conv2.weight", (128, 128, 3, 3)),
        ("encoder.down.1.block.0.nin_shortcut.weight", (256, 128, 1, 1)),
        ("encoder.down.2.downsample.conv.weight", (512, 512, 3, 3)),
        ("encoder.mid.attn_1.q.weight", (512, 512, 1, 1)),
        ("encoder.mid.attn_1.proj_out.bias", (512,)),
        ("encoder.conv_out.weight", (8, 512, 3, 3)),
        ("decoder.conv_in.weight", (512, 4, 3, 3)),
        ("decoder.mid.block_2.norm2.weight", (512,)),
        ("decoder.up.3.block.2.conv1.weight", (512, 512, 3, 3)),
        ("decoder.up.1.block.0.nin_shortcut.weight", (256, 512, 1, 1)),
        ("decoder.up.1.upsample.conv.weight", (256, 256, 3, 3)),
        ("decoder.conv_out.weight", (3, 128, 3, 3)),
        ("quant_conv.weight", (8, 8, 1, 1)),
        ("post_quant_conv.weight", (4, 4, 1, 1)),
    ]:
        assert tuple(sd[key].shape) == shape, key
    assert "decoder.up.0.upsample.conv.weight" not in sd
    assert "encoder.down.3.downsample.conv.weight" not in sd
    assert vae.downscale_factor == 8


@pytest.mark.parametrize("factor", [8, 2])
@pytest.mark.parametrize("size", [(64, 48), (72, 40)])
def test_matches_diffusers(factor, size):
    vae = random_vae(tiny_vae_config(factor), seed=factor)
    ref = diffusers_twin(vae)
    torch.manual_seed(1)
    x = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(x)
        assert mean.shape == (2, 4, size[0] // factor, size[1] // factor)
        err = (mean - ref.encode(x).latent_dist.mean).abs().max().item()
        assert err <= TOL, f"encode max abs error {err:.3g}"
        z = torch.randn_like(mean)
        out = vae.decode(z)
        assert out.shape == (2, 3, *size)
        err = (out - ref.decode(z).sample).abs().max().item()
        assert err <= TOL, f"decode max abs error {err:.3g}"


def test_odd_pixel_sizes_match_diffusers():
    vae = random_vae(tiny_vae_config(), seed=3)
    ref = diffusers_twin(vae)
    x = torch.rand(1, 3, 69, 45) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(x)
        assert mean.shape == (1, 4, 8, 5)  # floor at every halving, as in the original
        assert (mean - ref.encode(x).latent_dist.mean).abs().max().item() <= TOL


def test_sampling_uses_generator_like_diffusers():
    vae = random_vae(tiny_vae_config(), seed=4)
    ref = diffusers_twin(vae)
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    with torch.no_grad():
        a = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        b = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(7))
        c = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(8))
        mean, logvar = vae.encode_moments(x)
        expect = ref.encode(x).latent_dist.sample(generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, mean)
    assert (a - expect).abs().max().item() <= TOL
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a, mean + torch.exp(0.5 * logvar) * noise, atol=1e-6)


def test_linear_attention_weights_load():
    vae = random_vae(tiny_vae_config(), seed=5)
    sd = vae.state_dict()
    linear = {k: (v[:, :, 0, 0].clone() if ".attn_1." in k and k.endswith("weight") and v.ndim == 4 else v)
              for k, v in sd.items()}
    assert linear["decoder.mid.attn_1.proj_out.weight"].ndim == 2
    conv1d = {k: (v.unsqueeze(-1) if v.ndim == 2 and ".attn_1." in k else v) for k, v in linear.items()}
    assert conv1d["encoder.mid.attn_1.q.weight"].ndim == 3
    z = torch.randn(1, 4, 6, 5)
    with torch.no_grad():
        want = vae.decode(z)
        for variant in (linear, conv1d):
            other = AutoencoderKL.from_state_dict({"first_stage_model." + k: v for k, v in variant.items()})
            assert other.state_dict()["encoder.mid.attn_1.k.weight"].shape == sd["encoder.mid.attn_1.k.weight"].shape
            assert torch.equal(other.decode(z), want)
    assert linear["encoder.mid.attn_1.q.weight"].ndim == 2  # the caller's dict is left as given


def test_from_state_dict_is_strict():
    sd = random_vae(tiny_vae_config(), seed=6).state_dict()
    sd["encoder.mid.attn_1.extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="encoder.mid.attn_1.extra"):
        AutoencoderKL.from_state_dict(sd)


def test_chunked_attention_is_exact(monkeypatch):
    vae = random_vae(tiny_vae_config(2), seed=7)
    z = torch.randn(1, 4, 36, 36)  # 1296 tokens at the attention
    with torch.no_grad():
        whole = vae.decode(z)
        monkeypatch.setattr(vae_model, "_ATTN_SCORE_BUDGET", 1)  # forces 1024-query chunks
        chunked = vae.decode(z)
    assert (whole - chunked).abs().max().item() <= 1e-5


def test_dtype_follows_model():
    vae = random_vae(tiny_vae_config(), seed=8).to(torch.bfloat16)
    x = torch.rand(1, 3, 16, 16, dtype=torch.float32)
    with torch.no_grad():
        z = vae.encode(x)
        assert z.dtype == torch.bfloat16
        assert vae.decode(z.float()).dtype == torch.bfloat16


def test_sixteen_channel_vae_without_quant_convs_matches_diffusers():
    """SD3's and Flux's VAE layout: 16 latent channels, no quant_conv / post_quant_conv (detected from the keys)."""
    from dataclasses import replace
    from diffusion.vae.config import detect_vae_config
    config = replace(tiny_vae_config(8), z_channels=16, embed_dim=16, quant_conv=False)
    vae = random_vae(config, seed=3)
    state = vae.state_dict()
    assert not any("quant_conv" in k for k in state)
    assert detect_vae_config(state, norm_groups=config.norm_groups) == config
    ref = diffusers_twin(vae)
    x = torch.rand(1, 3, 64, 48) * 2 - 1
    with torch.no_grad():
        mean = vae.encode(x)
        assert mean.shape == (1, 16, 8, 6)
        assert (mean - ref.encode(x).latent_dist.mean).abs().max().item() <= TOL
        z = torch.randn_like(mean)
        assert (vae.decode(z) - ref.decode(z).sample).abs().max().item() <= TOL
