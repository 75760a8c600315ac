"""ComfyUI's VAE and CLIP interfaces as packs use them, on our objects: the VAE's attributes and keyword tiled
passes, and SDXL's two-encoder tokens ("g" and "l")."""
import pytest
import torch

from model_management.checkpoints import load_checkpoint


@pytest.fixture(scope="module")
def sd1(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"))


@pytest.fixture(scope="module")
def sdxl(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sdxl"))


def test_vae_face(sd1):
    vae = sd1.vae
    assert vae.first_stage_model is vae.vae and vae.patcher is vae and vae.load_device == vae.device
    assert vae.downscale_ratio == vae.spacial_compression_decode() == vae.spacial_compression_encode() == 8
    image = torch.rand(1, 36, 43, 3)
    cropped = vae.vae_encode_crop_pixels(image)
    assert cropped.shape == (1, 32, 40, 3)
    torch.testing.assert_close(cropped, image[:, 2:34, 1:41])  # centred, as encode crops
    latent = vae.encode(image)
    assert latent.shape == (1, 4, 4, 5)
    torch.testing.assert_close(vae.process_output(vae.process_input(image)), image)
    # ComfyUI's keyword form (tiles in latent cells) equals ours
    big = torch.randn(1, 4, 16, 16)
    torch.testing.assert_close(vae.decode_tiled(big, tile_x=8, tile_y=8, overlap=2),
                               vae.decode_tiled(big, tile=8, overlap=2))
    with pytest.raises(ValueError, match="square tiles"):
        vae.decode_tiled(big, tile_x=8, tile_y=4)
    assert vae.memory_used_decode((1, 4, 64, 64), torch.float32) == 64 * 64 * 200_000
    assert vae.memory_used_decode((1, 4, 64, 64), torch.float16) == 64 * 64 * 100_000


def test_sdxl_tokens_carry_both_encoders(sdxl):
    from model_management.clip_face import SDXLClipModel, SDXLTokenizer
    clip = sdxl.clip
    tokens = clip.tokenize("a red cube")
    assert sorted(tokens) == ["g", "l"]
    assert isinstance(clip.tokenizer, SDXLTokenizer) and isinstance(clip.cond_stage_model, SDXLClipModel)
    assert clip.tokenizer.clip_l.pad_with_end and not clip.tokenizer.clip_g.pad_with_end  # bigG pads with 0
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    ours, our_pooled, _ = clip.encode("a red cube")
    torch.testing.assert_close(cond, ours)
    torch.testing.assert_close(pooled, our_pooled)
    with pytest.raises(ValueError, match="needs tokens under 'g'"):
        clip.encode_from_tokens({"l": tokens["l"]})
    # each encoder on its own (packs that reweight per encoder): the halves of the stack's cond, and bigG's pooled
    weighted = clip.tokenize("a (red:1.4) cube")
    full, full_pooled = clip.encode_from_tokens(weighted, return_pooled=True)
    l_cond, l_pooled = clip.cond_stage_model.clip_l.encode_token_weights(weighted["l"])
    g_cond, g_pooled = clip.cond_stage_model.clip_g.encode_token_weights(weighted)
    width_l = l_cond.shape[-1]
    assert width_l + g_cond.shape[-1] == full.shape[-1] and l_pooled.shape[-1] == width_l
    torch.testing.assert_close(l_cond, full[..., :width_l])
    torch.testing.assert_close(g_cond, full[..., width_l:])
    torch.testing.assert_close(g_pooled, full_pooled)
    with pytest.raises(ValueError, match="clip_g"):
        clip.cond_stage_model.clip_g.encode_token_weights({"l": weighted["l"]})
    clip.cond_stage_model.set_clip_options({"layer": -3})
    assert clip.layer_idx == -3


def test_clip_weight_patches_by_comfyui_names(sd1, sdxl):
    """As LoRA block-weight packs patch CLIP: add_patches with ComfyUI's keys on a clone; get_key_patches and
    model_state_dict answer in the same names."""
    clip = sd1.clip
    key = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    weights = clip.model_state_dict()
    assert key in weights and weights[key].shape == clip.stack.encoders[0].model.state_dict()[
        "encoder.layers.0.self_attn.q_proj.weight"].shape
    patched = clip.clone()
    used = patched.add_patches({key: ("diff", (torch.randn_like(weights[key]),)), "not.a.key": (torch.zeros(1),)},
                               0.5)
    assert used == [key]
    before, _, _ = clip.encode("a red cube")
    after, _, _ = patched.encode("a red cube")
    assert not torch.allclose(before, after)
    torch.testing.assert_close(clip.encode("a red cube")[0], before)  # the original keeps its weights
    entry = patched.get_key_patches("clip_l.")[key]
    assert isinstance(entry, list) and entry[1][0] == 0.5
    assert isinstance(clip.get_key_patches("clip_l.")[key], tuple)
    xl = sdxl.clip.model_state_dict()
    assert "clip_g.transformer.text_projection.weight" in xl
    assert "clip_g.transformer.text_model.encoder.layers.0.mlp.fc1.weight" in xl
    assert "clip_l.transformer.text_model.final_layer_norm.weight" in xl
