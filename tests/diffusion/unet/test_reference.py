"""Forward parity with diffusers' UNet2DConditionModel, weights moved by diffusers' LDM converter."""
import pytest
import torch

from diffusion.unet import (UNetModel, sdxl_vector_input, tiny_sd1_config, tiny_sd2_config, tiny_sdxl_config,
                            tiny_sdxl_refiner_config)
from diffusion.unet.config import TINY_SDXL_POOLED_DIM

pytest.importorskip("diffusers")
from tests.diffusion.unet.reference import to_diffusers  # noqa: E402

CONFIGS = {
    "sd1": tiny_sd1_config,
    "sd2": tiny_sd2_config,
    "sdxl": tiny_sdxl_config,
    "sdxl_refiner": tiny_sdxl_refiner_config,
    "sd1_inpaint": lambda: tiny_sd1_config(in_channels=9),
}


def _inputs(cfg, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    b = 2
    x = torch.randn(b, cfg.in_channels, *size, generator=g)
    t = torch.tensor([3.0, 741.5])
    ctx = torch.randn(b, 7, cfg.context_dim, generator=g)
    extra = {}
    if cfg.adm_in_channels:
        n_ids = (cfg.adm_in_channels - TINY_SDXL_POOLED_DIM) // 256
        pooled = torch.randn(b, TINY_SDXL_POOLED_DIM, generator=g)
        ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024][:n_ids], [768.0, 1344, 16, 32, 896, 1152][:n_ids]])
        extra = {"text_embeds": pooled, "time_ids": ids}
    return x, t, ctx, extra


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("size", [(16, 16), (9, 13)], ids=["16x16", "odd9x13"])
def test_matches_diffusers(name, size):
    cfg = CONFIGS[name]()
    torch.manual_seed(0)
    model = UNetModel(cfg).eval()
    ref = to_diffusers(model, cfg)
    x, t, ctx, extra = _inputs(cfg, size)
    y = sdxl_vector_input(extra["text_embeds"], extra["time_ids"]) if extra else None
    with torch.no_grad():
        ours = model(x, t, ctx, y=y)
        theirs = ref(x, t, encoder_hidden_states=ctx, added_cond_kwargs=extra or None).sample
    assert ours.shape == (x.shape[0], cfg.out_channels, *size)
    assert ours.std() > 1e-2  # a real signal, not two zero maps agreeing
    err = (ours - theirs).abs().max().item()
    assert err <= 1e-4, f"{name}: max abs error {err}"


def test_y_layout_is_pooled_then_embedded_ids():
    pooled = torch.randn(2, 1280)
    ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)
    y = sdxl_vector_input(pooled, ids)
    assert y.shape == (2, 2816)
    assert torch.equal(y[:, :1280], pooled)
    # each id -> 256 dims, cos half first: id 0 (crop) embeds as [1]*128 + [0]*128
    crop = y[:, 1280 + 2 * 256:1280 + 3 * 256]
    assert torch.equal(crop[:, :128], torch.ones(2, 128)) and torch.equal(crop[:, 128:], torch.zeros(2, 128))
