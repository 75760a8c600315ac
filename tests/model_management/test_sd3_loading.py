"""SD3 / SD3.5 files in each released layout: single-file checkpoints with and without their text encoders, bare
diffusion models (original and diffusers key names), the standalone text-encoder files in any order."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint, load_unet_file, load_vae_file
from model_management.file_loading import ModelFileError
from model_management.precision_policy import PrecisionPolicy
from model_management.text_encoder_files import load_text_encoder_files
from tests.diffusion.mmdit.helpers import diffusers_sd3


def test_checkpoint_with_its_text_encoders(tiny_models):
    loaded = load_checkpoint(tiny_models.sd3("checkpoint"))
    assert loaded.family.name == "sd3" and loaded.family.prediction == "flow" and not loaded.leftovers
    assert type(loaded.model.unet).__name__ == "MMDiT"
    assert loaded.model.unet.config.self_attention_layers == (0,) and loaded.model.unet.config.qk_norm
    assert loaded.clip.stack.roles == ["clip_l", "clip_g", "t5xxl"]
    assert loaded.vae.vae.config.embed_dim == 16 and not loaded.vae.vae.config.quant_conv
    fmt = loaded.model.latent_format
    assert (fmt.scale_factor, fmt.shift_factor, fmt.latent_channels) == (1.5305, 0.0609, 16)
    sampling = loaded.model.model_sampling
    assert sampling.prediction == "flow" and float(sampling.timestep(torch.tensor(0.5))) == 500.0
    # SD3's shift 3.0: sigma(t) = 3t / (1 + 2t)
    assert float(sampling.sigma(torch.tensor(500.0))) == pytest.approx(1.5 / 2.0)


def test_checkpoint_without_text_encoders_gives_no_clip(tiny_models):
    loaded = load_checkpoint(tiny_models.sd3("checkpoint_no_text"))
    assert loaded.clip is None and loaded.model is not None and loaded.vae is not None
    assert any("load one with a CLIP loader" in n for n in loaded.family.notes)


def test_bare_diffusion_model_equals_the_checkpoints(tiny_models):
    bare = load_unet_file(tiny_models.sd3("diffusion_model"))
    full = load_checkpoint(tiny_models.sd3("checkpoint"), want_clip=False, want_vae=False)
    assert bare.family.name == "sd3"
    for (name, a), (_, b) in zip(sorted(bare.unet.state_dict().items()), sorted(full.model.unet.state_dict().items())):
        assert torch.equal(a, b), name
    vae = load_vae_file(tiny_models.sd3("vae"))
    assert vae.vae.config.z_channels == 16


def test_diffusers_layout_file_runs_as_diffusers_runs_it(tmp_path):
    ref = diffusers_sd3(layers=2, qk_norm="rms_norm", dual_attention_layers=(0,))
    path = tmp_path / "sd3.5_medium_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = load_unet_file(str(path))
    assert model.family.name == "sd3" and model.unet.config.self_attention_layers == (0,)
    torch.manual_seed(0)
    x, context, pooled = torch.randn(1, 16, 8, 8), torch.randn(1, 5, 48), torch.randn(1, 40)
    t = torch.tensor([640.0])
    with torch.no_grad():
        expected = ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t).sample
        got = model.forward(x, t, context, y=pooled)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_bf16_policy_loads_each_part_in_its_dtype(tiny_models):
    policy = PrecisionPolicy(unet=torch.bfloat16, text_encoder=torch.bfloat16, vae=torch.float32)
    loaded = load_checkpoint(tiny_models.sd3("checkpoint"), precision=policy)
    assert loaded.model.unet.context_embedder.weight.dtype == torch.bfloat16
    assert loaded.clip.stack.encoder("t5xxl").model.shared.weight.dtype == torch.bfloat16
    assert next(loaded.vae.vae.parameters()).dtype == torch.float32


def test_triple_clip_files_in_any_order_equal_the_bundled_encoders(tiny_models):
    bundled = load_checkpoint(tiny_models.sd3("checkpoint"), want_model=False, want_vae=False).clip
    files = [tiny_models.sd3(r) for r in ("t5xxl", "clip_g", "clip_l")]
    triple = load_text_encoder_files(files, "sd3")
    assert triple.family_name == "sd3" and triple.stack.roles == ["clip_l", "clip_g", "t5xxl"]
    expected, expected_pooled, _ = bundled.encode("a red fox in the snow")
    cond, pooled, _ = triple.encode("a red fox in the snow")
    assert torch.equal(cond, expected) and torch.equal(pooled, expected_pooled)


def test_dual_and_single_sd3_loaders(tiny_models):
    dual = load_text_encoder_files([tiny_models.sd3("clip_g"), tiny_models.sd3("clip_l")], "sd3")
    assert dual.stack.roles == ["clip_l", "clip_g"]
    cond, pooled, _ = dual.encode("a fox")
    assert cond.shape == (1, 77, 4096) and pooled.shape == (1, 192)
    t5 = load_text_encoder_files([tiny_models.sd3("t5xxl")], "sd3")
    assert t5.stack.roles == ["t5xxl"]
    assert t5.encode("a fox")[0].shape == (1, 77, 256)
    with pytest.raises(ModelFileError, match="at most one T5-XXL"):
        load_text_encoder_files([tiny_models.sd3("t5xxl"), tiny_models.sd3("t5xxl")], "sd3")
