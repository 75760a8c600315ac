"""Flux Redux: SigLIP vision towers (sigclip_vision_patch14_384's layout) against transformers' SiglipVisionModel
on the same weights and the same preprocessing, the Redux projection in closed form, StyleModelApply's token
append with its strength types, and the Flux Redux workflow end to end on tiny models."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffusion.synthetic_clip_vision import make_redux, make_siglip_vision
from diffusion.vision.clip_vision import ClipVisionEncoder
from model_management.clip_vision_files import load_clip_vision
from nodes.style_model import StyleModel, StyleModelApply
from diffusion.vision.redux import build_redux


def _reference(state):
    from transformers import SiglipVisionConfig, SiglipVisionModel
    config = SiglipVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1,
                                image_size=28, patch_size=14, vision_use_head=False)
    model = SiglipVisionModel(config).eval()
    own = model.state_dict()
    plain = {k[len("vision_model."):]: v for k, v in state.items()}
    model.load_state_dict({k: plain[k] if k in plain else state[k] for k in own if "position_ids" not in k},
                          strict=False)
    return model


def test_siglip_tower_matches_transformers(tmp_path):
    state = make_siglip_vision(seed=4)
    path = str(tmp_path / "sigclip_vision_patch14_384.safetensors")
    save_file(state, path)
    vision = load_clip_vision(path)
    assert vision.encoder.layout == "siglip" and vision.image_size == 28 and vision.image_mean == [0.5] * 3
    image = torch.rand(1, 40, 56, 3)
    out = vision.encode_image(image, crop=True)
    pixels = F.interpolate(image.movedim(-1, 1), size=(28, 39), mode="bicubic", antialias=True)[..., :, 5:33]
    pixels = ((pixels.clamp(0, 1) * 255).round() / 255 - 0.5) / 0.5
    with torch.no_grad():
        expected = _reference(state)(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(out["last_hidden_state"], expected, atol=1e-5, rtol=1e-5)
    assert out["last_hidden_state"].shape == (1, 4, 64)


def test_redux_projection_in_closed_form():
    state = make_redux(image_width=64, text_width=32, seed=1)
    model = build_redux(dict(state))
    x = torch.randn(2, 4, 64)
    expected = F.linear(F.silu(F.linear(x, state["redux_up.weight"], state["redux_up.bias"])),
                        state["redux_down.weight"], state["redux_down.bias"])
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="48-wide but this Redux model takes 64"):
        model(torch.randn(1, 4, 48))


def _apply(conditioning, strength, strength_type, tokens):
    style = StyleModel(build_redux(make_redux(image_width=64, text_width=32, seed=2)))
    return StyleModelApply().run(None, conditioning, style, {"last_hidden_state": tokens}, strength,
                                 strength_type)[0], style


def test_style_model_apply_appends_the_scaled_tokens():
    tokens = torch.randn(2, 4, 64)  # two images: their tokens are laid end to end
    text = torch.randn(1, 7, 32)
    out, style = _apply([[text, {"pooled_output": torch.ones(1, 8)}]], 0.6, "multiply", tokens)
    expected = style.get_cond({"last_hidden_state": tokens}).reshape(1, 8, 32) * 0.6
    assert out[0][0].shape == (1, 15, 32) and torch.equal(out[0][0][:, :7], text)
    torch.testing.assert_close(out[0][0][:, 7:], expected)
    assert torch.equal(out[0][1]["pooled_output"], torch.ones(1, 8))
    same, _ = _apply([[text, {}]], 1.0, "attn_bias", tokens)
    unit, _ = _apply([[text, {}]], 1.0, "multiply", tokens)
    assert torch.equal(same[0][0], unit[0][0])
    with pytest.raises(ValueError, match="attn_bias with a strength other than 1"):
        _apply([[text, {}]], 0.5, "attn_bias", tokens)
    with pytest.raises(ValueError, match="32-wide but the conditioning's are 16-wide"):
        _apply([[torch.randn(1, 7, 16), {}]], 1.0, "multiply", tokens)


def test_the_redux_workflow_runs_and_the_image_follows_the_reference(tmp_path, tiny_models):
    from tests.nodes.test_flux_nodes import separate_files_prompt
    from tests.nodes.test_model_nodes import ModelEngine
    from tests.nodes.test_sd3_nodes import image
    eng = ModelEngine(tmp_path)
    links = {"diffusion_models": [("flux1-dev.safetensors", tiny_models.flux("diffusion_model"))],
             "vae": [("ae.safetensors", tiny_models.flux("vae"))],
             "text_encoders": [("clip_l.safetensors", tiny_models.sd3("clip_l")),
                               ("t5xxl_fp16.safetensors", tiny_models.sd3("t5xxl"))]}
    for folder, names in links.items():
        os.makedirs(eng.models(folder), exist_ok=True)
        for name, source in names:
            os.symlink(source, os.path.join(eng.models(folder), name))
    for folder, name, state in (("clip_vision", "sigclip_vision_patch14_384.safetensors", make_siglip_vision()),
                                ("style_models", "flux1-redux-dev.safetensors", make_redux())):
        os.makedirs(eng.models(folder), exist_ok=True)
        save_file(state, os.path.join(eng.models(folder), name))
    from PIL import Image
    os.makedirs(eng.services.paths.input_dir, exist_ok=True)
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            os.path.join(eng.services.paths.input_dir, f"ref{i}.png"))

    def prompt(reference=None):
        p = separate_files_prompt(steps=2)
        if reference is not None:
            p["cv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "sigclip_vision_patch14_384.safetensors"}}
            p["sm"] = {"class_type": "StyleModelLoader", "inputs": {"style_model_name": "flux1-redux-dev.safetensors"}}
            p["img"] = {"class_type": "LoadImage", "inputs": {"image": reference}}
            p["enc"] = {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["cv", 0], "image": ["img", 0],
                                                                   "crop": "center"}}
            p["style"] = {"class_type": "StyleModelApply", "inputs": {
                "conditioning": ["fg", 0], "style_model": ["sm", 0], "clip_vision_output": ["enc", 0],
                "strength": 1.0, "strength_type": "multiply"}}
            p["sample"]["inputs"]["positive"] = ["style", 0]
        return p

    images = {}
    for name, reference in (("plain", None), ("first", "ref0.png"), ("second", "ref1.png")):
        outcome, _ = eng.run(prompt(reference))
        assert outcome.status == "success", outcome.error
        images[name] = image(eng, outcome)
    assert not np.array_equal(images["first"], images["plain"])
    assert not np.array_equal(images["first"], images["second"])
