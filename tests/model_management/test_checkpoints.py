"""Loading checkpoints in the real layouts: families, variants, every key consumed, and clear errors."""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_management.checkpoints import load_checkpoint, load_unet_file, load_vae_file
from model_management.detection import detect_checkpoint, unet_family
from model_management.file_loading import ModelFileError
from model_management.text_encoder_files import load_text_encoder_files

FAMILIES = ["sd1", "sd2", "sdxl", "sdxl_refiner"]


def under(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_loads_with_every_key_consumed(tiny_models, family):
    path = tiny_models.checkpoint(family)
    loaded = load_checkpoint(path)
    assert loaded.family.name == family and loaded.family.prediction == "eps"
    assert loaded.leftovers == []
    state = load_file(path)
    unet_keys = {k[len("model.diffusion_model."):] for k in state if k.startswith("model.diffusion_model.")}
    vae_keys = {k[len("first_stage_model."):] for k in state if k.startswith("first_stage_model.")}
    assert set(loaded.model.unet.state_dict()) == unet_keys
    assert set(loaded.vae.vae.state_dict()) == vae_keys
    report = loaded.clip.stack.load_report()
    assert all(r["unused"] == [] for r in report.values()), report
    assert loaded.model.latent_scale == (0.13025 if family.startswith("sdxl") else 0.18215)


def test_variants_inpainting_v_prediction_and_fp16(tiny_models):
    inpaint = load_checkpoint(tiny_models.checkpoint("sd1", inpainting=True))
    assert inpaint.family.inpainting and inpaint.model.unet.state_dict()["input_blocks.0.0.weight"].shape[1] == 9
    v = load_checkpoint(tiny_models.checkpoint("sd2", v_prediction=True))
    assert v.family.prediction == "v" and v.leftovers == []
    half = tiny_models.checkpoint("sd1", dtype=torch.float16)
    assert load_file(half)["model.diffusion_model.out.2.weight"].dtype == torch.float16
    loaded = load_checkpoint(half)
    assert next(loaded.model.unet.parameters()).dtype == torch.float32  # compute dtype on CPU
    assert load_checkpoint(tiny_models.checkpoint("sd2"), prediction="v").family.prediction == "v"


def test_sd2_v_prediction_heuristic_and_metadata(tiny_models):
    state = load_file(tiny_models.checkpoint("sd2"))
    assert detect_checkpoint(state).prediction == "eps"
    key = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"
    probe = dict(state)
    probe[key] = torch.randn(320) * 0.5
    assert detect_checkpoint(probe).prediction == "v"
    assert detect_checkpoint(state, {"modelspec.prediction_type": "v"}).prediction == "v"


def test_unet_family_from_structure_alone(tiny_models):
    for family in FAMILIES:
        state = load_file(tiny_models.checkpoint(family))
        unet = {k[len("model.diffusion_model."):]: v for k, v in state.items()
                if k.startswith("model.diffusion_model.")}
        assert unet_family(unet) == family


def test_standalone_vae_unet_and_text_encoder_files(tiny_models, tmp_path):
    state = load_file(tiny_models.checkpoint("sdxl"))
    vae_path, unet_path = str(tmp_path / "vae.safetensors"), str(tmp_path / "unet.safetensors")
    save_file(under(state, "first_stage_model."), vae_path)
    save_file(under(state, "model.diffusion_model."), unet_path)
    assert load_vae_file(vae_path).downscale == 8
    assert load_unet_file(unet_path).family.name == "sdxl"
    l_path, g_path = str(tmp_path / "clip_l.safetensors"), str(tmp_path / "clip_g.safetensors")
    save_file(under(state, "conditioner.embedders.0.transformer."), l_path)
    save_file(under(state, "conditioner.embedders.1.model."), g_path)
    dual = load_text_encoder_files([g_path, l_path], "sdxl")  # any order
    reference = load_checkpoint(tiny_models.checkpoint("sdxl"), want_model=False, want_vae=False).clip
    a, pa, _ = dual.encode("a red fox")
    b, pb, _ = reference.encode("a red fox")
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(pa, pb, atol=1e-6)
    sd2 = load_file(tiny_models.checkpoint("sd2"))
    h_path = str(tmp_path / "clip_h.safetensors")
    save_file(under(sd2, "cond_stage_model.model."), h_path)
    assert load_text_encoder_files([h_path], "stable_diffusion").family_name == "sd2"


def test_clear_errors_for_wrong_files(tiny_models, tmp_path):
    state = load_file(tiny_models.checkpoint("sd1"))
    vae_only = str(tmp_path / "just_a_vae.safetensors")
    save_file({k: v for k, v in state.items() if k.startswith("first_stage_model.")}, vae_only)
    with pytest.raises(ModelFileError, match=r"just_a_vae.*standalone VAE.*Load VAE"):
        load_checkpoint(vae_only)
    weird = str(tmp_path / "weird.safetensors")
    save_file({"foo.bar": torch.zeros(2)}, weird)
    with pytest.raises(ModelFileError, match=r"weird.*unknown architecture"):
        load_checkpoint(weird)
    truncated = str(tmp_path / "cut.safetensors")
    data = open(tiny_models.checkpoint("sd1"), "rb").read()
    open(truncated, "wb").write(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut.safetensors.*truncated"):
        load_checkpoint(truncated)
    broken = dict(state)
    broken["model.diffusion_model.out.2.weight"] = torch.zeros(3, 3, 3, 3)
    bad = str(tmp_path / "bad_shapes.safetensors")
    save_file(broken, bad)
    with pytest.raises(ModelFileError, match="bad_shapes"):
        load_checkpoint(bad)
    with pytest.raises(ModelFileError, match=r"not a VAE.*LoRA"):
        lora = str(tmp_path / "lora.safetensors")
        save_file({"lora_unet_down_blocks_0.lora_up.weight": torch.zeros(2, 2)}, lora)
        load_vae_file(lora)


def test_vae_round_trip_and_text_encoding(tiny_models):
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    image = torch.rand(2, 68, 60, 3)  # not a multiple of 8: centre-cropped
    latent = loaded.vae.encode(image)
    assert latent.shape == (2, 4, 8, 7)
    decoded = loaded.vae.decode(latent)
    assert decoded.shape == (2, 64, 56, 3) and 0 <= decoded.min() and decoded.max() <= 1
    cond, pooled, warnings = loaded.clip.encode("a photo of a cat, " * 20)  # 120 tokens: two windows
    assert cond.shape == (1, 154, 64) and warnings == []
    skipped = loaded.clip.with_clip_skip(-2).encode("a photo of a cat")[0]
    assert not torch.allclose(skipped, loaded.clip.encode("a photo of a cat")[0])


def test_diffusers_folder_loads_and_matches_diffusers(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=8, norm_num_groups=32).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
                        layers_per_block=1, latent_channels=4, norm_num_groups=32).eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=77))
    folder = tmp_path / "pipeline"
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    loaded = load_checkpoint(str(folder))
    assert loaded.family.name == "sd1" and loaded.leftovers == []
    x, t, ctx = torch.randn(1, 4, 16, 16), torch.tensor([500.0]), torch.randn(1, 77, 64)
    with torch.no_grad():
        expected = unet(x, t, ctx).sample
        ours = loaded.model.unet(x, t, ctx)
        assert (ours - expected).abs().max() < 1e-4
        z = torch.randn(1, 4, 4, 4)
        assert (loaded.vae.vae.decode(z) - vae.decode(z).sample).abs().max() < 1e-4
    assert os.path.isdir(folder / "unet")
