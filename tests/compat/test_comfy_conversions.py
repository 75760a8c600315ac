"""comfy.float (stochastic rounding to fp8) and comfy.diffusers_convert (diffusers layouts to the original ones),
checked by closed forms and against diffusers' / transformers' own models."""
import sys

import pytest
import torch
from diffusers import AutoencoderKL as DiffusersVAE
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

import compat
from diffusion.unet.config import detect_unet_config
from diffusion.unet.model import UNetModel
from diffusion.vae import AutoencoderKL
from diffusion.vae.config import detect_vae_config, tiny_vae_config
from tests.diffusion.vae.helpers import diffusers_config
from tests.model_management.upscale_fixtures import compact_state_dict

if compat.COMPAT_DIR not in sys.path:
    sys.path.append(compat.COMPAT_DIR)

import comfy.diffusers_convert as dc  # noqa: E402
import comfy.float as cfloat  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=["e4m3fn", "e5m2"])
def test_stochastic_rounding_is_unbiased_onto_the_grid(dtype):
    x = torch.full((400_000,), 0.3)
    out = cfloat.stochastic_rounding(x, dtype, seed=3)
    assert out.dtype == dtype
    values = out.float().unique()
    # the two neighbours of 0.3 on the grid, and nothing else
    grid = cfloat._grid(dtype, x.device)
    index = torch.searchsorted(grid, torch.tensor(0.3))
    up, down = grid[index], grid[index - 1]
    assert set(values.tolist()) == {down.item(), up.item()}
    expected_up = (0.3 - down) / (up - down)  # the probability of the upper neighbour
    assert abs((out.float() == up).float().mean() - expected_up) < 0.005
    assert abs(out.float().mean() - 0.3) < 0.002  # unbiased, where round-to-nearest is not
    assert torch.equal(cfloat.stochastic_rounding(x, dtype, seed=3).float(), out.float())  # reproducible
    assert not torch.equal(cfloat.stochastic_rounding(x, dtype, seed=4).float(), out.float())
    exact = torch.tensor([0.0, -0.5, 1.0, 2.0])
    assert torch.equal(cfloat.stochastic_rounding(exact, dtype).float(), exact)  # grid values stay put
    big = cfloat.stochastic_rounding(torch.tensor([1e9, -1e9]), dtype).float()
    assert big.tolist() == [torch.finfo(dtype).max, -torch.finfo(dtype).max]


def test_other_dtypes_are_a_plain_cast():
    x = torch.randn(50)
    assert torch.equal(cfloat.stochastic_rounding(x, torch.float16), x.half())
    assert torch.equal(cfloat.stochastic_rounding(x, torch.bfloat16), x.bfloat16())
    with pytest.raises(ValueError, match="unsupported dtype"):
        cfloat.manual_stochastic_round_to_float8(x, torch.float16)


def test_a_diffusers_unet_converts_to_the_ldm_layout():
    torch.manual_seed(0)
    ref = UNet2DConditionModel(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                               down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                               up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48,
                               attention_head_dim=8, norm_num_groups=32).eval()
    ldm = dc.convert_unet_state_dict(ref.state_dict())
    ours = UNetModel(detect_unet_config(ldm)).eval()
    ours.load_state_dict(ldm, strict=True)
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([300.0]), torch.randn(1, 5, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t, ctx), ref(x, t, ctx).sample, atol=1e-4, rtol=1e-4)


def test_a_diffusers_vae_converts_to_the_ldm_layout():
    config = tiny_vae_config()
    torch.manual_seed(1)
    ref = DiffusersVAE(**diffusers_config(config)).eval()
    ldm = dc.convert_vae_state_dict(ref.state_dict())
    assert ldm["decoder.mid.attn_1.q.weight"].ndim == 4  # LDM stores the attention projections as 1x1 convs
    ours = AutoencoderKL(detect_vae_config(ldm)).eval()
    ours.load_state_dict(ldm, strict=True)
    z = torch.randn(1, config.z_channels, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, atol=1e-4, rtol=1e-4)


def test_text_encoder_layouts():
    torch.manual_seed(2)
    hf = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                    num_attention_heads=2, projection_dim=24,
                                                    max_position_embeddings=77)).state_dict()
    assert dc.convert_text_enc_state_dict(hf) is hf
    prefixed = {"cond_stage_model.model.transformer." + k: v for k, v in hf.items()}
    prefixed["other.weight"] = torch.zeros(1)
    out = dc.convert_text_enc_state_dict_v20(prefixed, "cond_stage_model.model.")
    p = "cond_stage_model.model."
    assert "other.weight" not in out and f"{p}logit_scale" not in out
    q, k, v = (hf[f"text_model.encoder.layers.1.self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(out[f"{p}transformer.resblocks.1.attn.in_proj_weight"], torch.cat([q, k, v]))
    assert torch.equal(out[f"{p}text_projection"], hf["text_projection.weight"].t())
    assert torch.equal(out[f"{p}positional_embedding"], hf["text_model.embeddings.position_embedding.weight"])
    with pytest.raises(ValueError, match="no transformers-layout"):
        dc.convert_text_enc_state_dict_v20(prefixed, "missing.")


def test_chainner_models_loads_an_upscale_model():
    from comfy_extras.chainner_models import model_loading
    from model_management.upscaling import upscale_image
    model = model_loading.load_state_dict(compact_state_dict(scale=2))
    assert model.scale == 2 and model.architecture == "RealESRGAN Compact"
    assert tuple(upscale_image(model, torch.rand(1, 12, 10, 3)).shape) == (1, 24, 20, 3)
