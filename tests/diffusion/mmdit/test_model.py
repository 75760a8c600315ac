"""The MMDiT against diffusers' SD3Transformer2DModel on the same random weights (SD3, SD3.5 large and medium
shapes, reduced), through our diffusers -> original key converter and config detection from the weights."""
import pytest
import torch

from diffusion.mmdit.config import detect_mmdit_config
from diffusion.mmdit.model import MMDiT
from tests.diffusion.mmdit.helpers import diffusers_sd3, original_state

VARIANTS = {
    "sd3-medium": dict(layers=3),
    "sd3.5-large": dict(layers=3, qk_norm="rms_norm"),
    "sd3.5-medium": dict(layers=4, qk_norm="rms_norm", dual_attention_layers=(0, 1)),
}


def ours(ref):
    state = original_state(ref)
    model = MMDiT(detect_mmdit_config(state))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval()


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_read_from_the_weights(variant):
    kwargs = VARIANTS[variant]
    cfg = detect_mmdit_config(original_state(diffusers_sd3(**kwargs)))
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.patch_size) == (kwargs["layers"], 128, 2, 2)
    assert (cfg.context_in, cfg.pooled_in, cfg.pos_embed_max_size, cfg.mlp_hidden) == (48, 40, 16, 512)
    assert cfg.qk_norm == ("qk_norm" in kwargs)
    assert cfg.self_attention_layers == tuple(kwargs.get("dual_attention_layers", ()))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_matches_diffusers(variant, size):
    ref = diffusers_sd3(**VARIANTS[variant])
    model = ours(ref)
    torch.manual_seed(1)
    x = torch.randn(2, 16, *size)
    context = torch.randn(2, 7, 48)
    pooled = torch.randn(2, 40)
    t = torch.tensor([999.0, 312.5])
    with torch.no_grad():
        expected = ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled,
                       timestep=t).sample
        got = model(x, t, context, y=pooled)
    assert got.shape == expected.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()


def test_odd_latent_sizes_are_padded_and_cropped():
    model = ours(diffusers_sd3(layers=2))
    x = torch.randn(1, 16, 7, 9)
    with torch.no_grad():
        out = model(x, torch.tensor([500.0]), torch.randn(1, 5, 48), y=torch.randn(1, 40))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_a_latent_beyond_the_position_grid_is_refused():
    model = ours(diffusers_sd3(layers=2, pos_embed_max_size=8))
    with pytest.raises(ValueError, match="position grid"):
        model(torch.randn(1, 16, 18, 8), torch.tensor([1.0]), torch.randn(1, 3, 48), y=torch.randn(1, 40))


def test_bf16_stays_close_to_fp32():
    ref = diffusers_sd3(layers=2, qk_norm="rms_norm")
    model = ours(ref)
    x, ctx, y, t = torch.randn(1, 16, 8, 8), torch.randn(1, 6, 48), torch.randn(1, 40), torch.tensor([700.0])
    with torch.no_grad():
        full = model(x, t, ctx, y=y)
        half = model.to(torch.bfloat16)(x, t, ctx, y=y)
    assert half.dtype == torch.float32
    assert (half - full).norm() / full.norm() < 0.03
