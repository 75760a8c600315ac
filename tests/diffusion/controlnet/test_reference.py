"""Residual parity with diffusers' ControlNetModel: identical random weights moved by our diffusers -> LDM renaming."""
import pytest
import torch

from model_management.control_files import controlnet_from_ldm, diffusers_to_ldm, ldm_to_diffusers
from model_management.synthetic_controlnets import make_controlnet
from diffusion.synthetic_checkpoints import _unet_config
from diffusion.unet import sdxl_vector_input, tiny_sd1_config, tiny_sd2_config, tiny_sdxl_config
from diffusion.unet.config import TINY_SDXL_POOLED_DIM

pytest.importorskip("diffusers")
from diffusers import ControlNetModel  # noqa: E402

from tests.diffusion.unet.reference import diffusers_config  # noqa: E402

CONFIGS = {"sd1": tiny_sd1_config, "sd2": tiny_sd2_config, "sdxl": tiny_sdxl_config}


def _reference(cfg, seed=0):
    """A diffusers ControlNetModel with random weights everywhere (its zero-initialised convs included)."""
    config = diffusers_config(cfg)
    for key in ("sample_size", "out_channels", "up_block_types"):
        config.pop(key)
    torch.manual_seed(seed)
    ref = ControlNetModel(**config).eval()
    with torch.no_grad():
        for p in ref.parameters():
            if not p.abs().max() > 0:
                p.normal_(0.0, 0.05)
    return ref


def _inputs(cfg, size, seed=1):
    g = torch.Generator().manual_seed(seed)
    b = 2
    x = torch.randn(b, cfg.in_channels, *size, generator=g)
    hint = torch.rand(b, 3, size[0] * 8, size[1] * 8, generator=g)
    t = torch.tensor([11.0, 802.0])
    ctx = torch.randn(b, 7, cfg.context_dim, generator=g)
    extra = {}
    if cfg.adm_in_channels:
        pooled = torch.randn(b, TINY_SDXL_POOLED_DIM, generator=g)
        ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [768.0, 1344, 16, 32, 896, 1152]])
        extra = {"text_embeds": pooled, "time_ids": ids}
    return x, hint, t, ctx, extra


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("size", [(8, 8), (5, 7)], ids=["8x8", "odd5x7"])
def test_residuals_match_diffusers(name, size):
    cfg = CONFIGS[name]()
    ref = _reference(cfg)
    ours = controlnet_from_ldm(diffusers_to_ldm(ref.state_dict())).network
    assert ours.config.unet.context_dim == cfg.context_dim and ours.config.family == name
    x, hint, t, ctx, extra = _inputs(cfg, size)
    y = sdxl_vector_input(extra["text_embeds"], extra["time_ids"]) if extra else None
    with torch.no_grad():
        got = ours(x, hint, t, ctx, y)
        down, mid = ref(x, t, encoder_hidden_states=ctx, controlnet_cond=hint, conditioning_scale=1.0,
                        added_cond_kwargs=extra or None, return_dict=False)
    assert len(got["output"]) == len(down) == cfg.num_input_blocks
    for i, (a, b) in enumerate(zip(got["output"] + got["middle"], list(down) + [mid])):
        assert a.shape == b.shape, i
        assert b.std() > 1e-3  # a real signal, not two zero maps agreeing
        err = (a - b).abs().max().item()
        assert err <= 1e-4, f"{name} residual {i}: max abs error {err}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_diffusers_layout_we_write_loads_strictly_in_diffusers(name):
    sd = make_controlnet(name, layout="diffusers", seed=3)
    ref = _reference(_unet_config(name, False, False))  # the synthetic checkpoints' UNet
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    # and the renaming round-trips exactly
    back = ldm_to_diffusers(diffusers_to_ldm(sd))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
