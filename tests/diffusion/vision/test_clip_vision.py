"""CLIP vision towers against transformers' CLIPVisionModelWithProjection on the same random weights, from files
in both layouts (transformers', and OpenCLIP's as unCLIP checkpoints hold it), through the nodes and through
`comfy.clip_vision.load` as IPAdapter packs call it."""
import os

import pytest
import torch
from safetensors.torch import save_file

from diffusion.vision.clip_vision import ClipVisionEncoder, clip_preprocess
from model_management.clip_vision_files import load_clip_vision


def _reference(act="gelu"):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=48, hidden_act=act, layer_norm_eps=1e-5)
    model = CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a swapped key would show
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def _to_openclip(sd):
    """transformers' names -> OpenCLIP's (written here independently of the loader's conversion)."""
    out = {"visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
           "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
           "visual.proj": sd["visual_projection.weight"].t().contiguous()}
    layer = 0
    while f"vision_model.encoder.layers.{layer}.layer_norm1.weight" in sd:
        hf, oc = f"vision_model.encoder.layers.{layer}.", f"visual.transformer.resblocks.{layer}."
        for leaf in ("weight", "bias"):
            out[oc + f"attn.in_proj_{leaf}"] = torch.cat([sd[hf + f"self_attn.{p}_proj.{leaf}"] for p in "qkv"])
            out[oc + f"attn.out_proj.{leaf}"] = sd[hf + f"self_attn.out_proj.{leaf}"]
            out[oc + f"ln_1.{leaf}"] = sd[hf + f"layer_norm1.{leaf}"]
            out[oc + f"ln_2.{leaf}"] = sd[hf + f"layer_norm2.{leaf}"]
            out[oc + f"mlp.c_fc.{leaf}"] = sd[hf + f"mlp.fc1.{leaf}"]
            out[oc + f"mlp.c_proj.{leaf}"] = sd[hf + f"mlp.fc2.{leaf}"]
        layer += 1
    return out


def _expected(model, pixels):
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    return out.last_hidden_state, out.hidden_states[-2], out.image_embeds


@pytest.fixture(scope="module")
def reference():
    return _reference()


def _state(model):
    return {k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("position_ids")}


@pytest.mark.parametrize("layout", ["hf", "openclip", "unclip_checkpoint"])
def test_loaded_tower_matches_transformers(tmp_path, reference, layout):
    sd = _state(reference)
    if layout == "openclip":
        sd = _to_openclip(sd)
    elif layout == "unclip_checkpoint":
        sd = {"embedder.model." + k: v for k, v in _to_openclip(sd).items()}
        sd["model.diffusion_model.dummy"] = torch.zeros(1)  # the rest of a checkpoint is ignored
    path = str(tmp_path / "vision.safetensors")
    save_file(sd, path)
    clip_vision = load_clip_vision(path)
    assert clip_vision.image_size == 32 and clip_vision.encoder.layout == ("hf" if layout == "hf" else "openclip")
    torch.manual_seed(1)
    image = torch.rand(2, 40, 56, 3)
    out = clip_vision.encode_image(image, crop=True)
    pixels = clip_preprocess(image, 32)
    last, penultimate, embeds = _expected(reference, pixels)
    torch.testing.assert_close(out["last_hidden_state"], last, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.penultimate_hidden_state, penultimate, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["image_embeds"], embeds, atol=1e-5, rtol=1e-5)
    assert out.image_embeds.shape == (2, 48) and out.last_hidden_state.shape == (2, 17, 128)
    assert out.image_sizes == [(3, 32, 32)] * 2


def test_crop_none_squashes_the_whole_image(reference):
    encoder = ClipVisionEncoder.from_state_dict(_state(reference))
    image = torch.zeros(1, 32, 64, 3)
    image[:, :, :16] = 1.0  # a white band at the left edge: cropped away by "center", kept by "none"
    centre = clip_preprocess(image, 32, crop=True)
    squashed = clip_preprocess(image, 32, crop=False)
    assert centre.shape == squashed.shape == (1, 3, 32, 32)
    assert float(squashed[0, 0, 16, 0]) > float(centre[0, 0, 16, 0])
    a = encoder.encode(centre)["image_embeds"]
    b = encoder.encode(squashed)["image_embeds"]
    assert not torch.allclose(a, b)


def test_quick_gelu_for_openai_vit_l_shapes_only():
    from diffusion.vision.clip_vision import derive_config
    def shapes(width, layers):
        sd = {"vision_model.embeddings.patch_embedding.weight": torch.empty(width, 3, 14, 14),
              "vision_model.embeddings.position_embedding.weight": torch.empty(257, width),
              "vision_model.encoder.layers.0.mlp.fc1.weight": torch.empty(4 * width, width),
              "visual_projection.weight": torch.empty(768, width)}
        sd.update({f"vision_model.encoder.layers.{i}.layer_norm1.weight": torch.empty(width) for i in range(layers)})
        return sd
    vit_l = derive_config(shapes(1024, 24))
    assert (vit_l.hidden_act, vit_l.num_attention_heads, vit_l.image_size) == ("quick_gelu", 16, 224)
    vit_h = derive_config(shapes(1280, 32))
    assert (vit_h.hidden_act, vit_h.num_attention_heads) == ("gelu", 16)


def test_bad_files_say_what_is_wrong(tmp_path):
    path = str(tmp_path / "not_vision.safetensors")
    save_file({"foo.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a CLIP vision model"):
        load_clip_vision(path)


def test_nodes_and_comfy_clip_vision_load(tmp_path, reference, engine):
    from model_management.services import Services
    import compat
    services = Services.for_directory(str(tmp_path))
    folder = os.path.join(services.paths.models_dir, "clip_vision")
    os.makedirs(folder, exist_ok=True)
    save_file(_state(reference), os.path.join(folder, "tiny_vit.safetensors"))
    from nodes.clip_vision import CLIPVisionEncode, CLIPVisionLoader, unCLIPConditioning
    from execution.context import detached_context
    ctx = detached_context(services, "CLIPVisionLoader")
    clip_vision = CLIPVisionLoader.SPEC.execute(None, ctx, {"clip_name": "tiny_vit.safetensors"})[0]
    image = torch.rand(1, 32, 32, 3)
    encoded = CLIPVisionEncode.SPEC.execute(None, ctx, {"clip_vision": clip_vision, "image": image,
                                                         "crop": "center"})[0]
    torch.testing.assert_close(encoded["image_embeds"], _expected(reference, clip_preprocess(image, 32))[2],
                               atol=1e-5, rtol=1e-5)
    cond = [[torch.zeros(1, 77, 8), {"pooled_output": None}]]
    applied = unCLIPConditioning.SPEC.execute(None, ctx, {"conditioning": cond, "clip_vision_output": encoded,
                                                          "strength": 0.5, "noise_augmentation": 0.1})[0]
    assert applied[0][1]["unclip_conditioning"] == [{"clip_vision_output": encoded, "strength": 0.5,
                                                     "noise_augmentation": 0.1}]
    assert "unclip_conditioning" not in cond[0][1]  # the input is not modified
    same = unCLIPConditioning.SPEC.execute(None, ctx, {"conditioning": cond, "clip_vision_output": encoded,
                                                       "strength": 0.0, "noise_augmentation": 0.0})[0]
    assert same is cond
    compat.install(services, engine.catalogue)
    import comfy.clip_vision
    loaded = comfy.clip_vision.load(os.path.join(folder, "tiny_vit.safetensors"))
    out = loaded.encode_image(image)
    assert isinstance(out, comfy.clip_vision.Output)
    torch.testing.assert_close(out["penultimate_hidden_state"], encoded.penultimate_hidden_state)


def test_comfy_call_form_of_clip_vision_model(tmp_path, reference):
    """IPAdapter calls `clip_vision.model(pixel_values=..., intermediate_output=-2)` and reads a tuple."""
    path = str(tmp_path / "vision.safetensors")
    save_file(_state(reference), path)
    clip_vision = load_clip_vision(path)
    pixels = clip_preprocess(torch.rand(1, 32, 32, 3), 32)
    last, middle, embeds, projected = clip_vision.model(pixel_values=pixels, intermediate_output=-2)
    expected = _expected(reference, pixels)
    torch.testing.assert_close(last, expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(middle, expected[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(embeds, expected[2], atol=1e-5, rtol=1e-5)
    assert projected is None
    first = clip_vision.model(pixel_values=pixels, intermediate_output=0)[1]
    with torch.no_grad():
        reference_first = reference(pixel_values=pixels, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(first, reference_first, atol=1e-5, rtol=1e-5)
    assert clip_vision.model(pixel_values=pixels, intermediate_output="all")[1].shape == (1, 3, 17, 128)
    assert clip_vision.model.config.image_size == 32  # transformers' attributes pass through
