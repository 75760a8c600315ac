"""Stability's SD3.5 ControlNets (diffusion/mmdit/controlnet.py): the network against diffusers'
SD3ControlNetModel (the SD3.5 variant: image-only blocks, no own patch embedding) on the same random weights, the
sin-cos grid in closed form, the residuals reaching the MMDiT after each block, the hint preprocessing per control
type, and the ControlNetApplyAdvanced workflow on a tiny SD3 (VAE-encoded hint; no VAE is a clear error)."""
import math
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from diffusion.mmdit.config import detect_mmdit_config
from diffusion.mmdit.controlnet import build_sd35_controlnet, sincos_grid
from diffusion.mmdit.model import MMDiT
from diffusion.synthetic_sd3 import make_sd35_controlnet, make_sd3_checkpoint
from tests.nodes.test_sd3_nodes import checkpoint_prompt, engine, image  # noqa: F401 - the fixture

PREFIX = "model.diffusion_model."


def _main_model():
    state = {k[len(PREFIX):]: v for k, v in make_sd3_checkpoint(text=()).items() if k.startswith(PREFIX)}
    model = MMDiT(detect_mmdit_config(state))
    model.load_state_dict(state)
    return model.eval()


class _Model:  # what compute reads of the MODEL: its transformer
    def __init__(self, unet):
        self.unet = unet


def _to_diffusers(state):
    """Stability's names -> diffusers' SD3ControlNetModel names (written here from the two layouts)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("pos_embed.", "control_type")):
            continue
        if key.startswith("transformer_blocks."):
            _, index, rest = key.split(".", 2)
            head = f"transformer_blocks.{index}."
            if rest.startswith("attn.qkv."):
                leaf = rest.rsplit(".", 1)[1]
                for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3)):
                    out[f"{head}attn.{name}.{leaf}"] = part
                continue
            rest = (rest.replace("adaLN_modulation.1.", "norm1.linear.").replace("attn.proj.", "attn.to_out.0.")
                    .replace("mlp.fc1.", "ff.net.0.proj.").replace("mlp.fc2.", "ff.net.2."))
            out[head + rest] = value
            continue
        out[key] = value
    return out


def test_the_network_matches_diffusers_sd35_controlnet():
    from diffusers import SD3ControlNetModel
    state = make_sd35_controlnet("blur", layers=2, seed=3)
    ours = build_sd35_controlnet(dict(state))
    cfg = ours.config
    ref = SD3ControlNetModel(patch_size=2, in_channels=16, num_layers=2, attention_head_dim=64,
                             num_attention_heads=cfg.num_heads, joint_attention_dim=None,
                             caption_projection_dim=cfg.hidden_size, pooled_projection_dim=cfg.pooled_in,
                             out_channels=16, pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False,
                             force_zeros_for_pooled_projection=False).eval()
    missing, unexpected = ref.load_state_dict(_to_diffusers(state), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    main = _main_model()
    torch.manual_seed(0)
    x, hint = torch.randn(1, 16, 8, 6), torch.randn(1, 16, 8, 6)
    y, t = torch.randn(1, cfg.pooled_in), torch.tensor([700.0])
    with torch.no_grad():
        got = ours.compute(x, t, None, y, hint, _Model(main))["output"]
        tokens = main.x_embedder(x) + sincos_grid(cfg.hidden_size, 3, 4)
        expected = ref(hidden_states=tokens, controlnet_cond=hint, pooled_projections=y, timestep=t).controlnet_block_samples
    repeat = math.ceil(cfg.main_depth / cfg.layers)
    assert len(got) == cfg.layers * repeat
    for i, sample in enumerate(expected):
        torch.testing.assert_close(got[i * repeat], sample, atol=1e-4, rtol=1e-4)


def test_sincos_grid_in_closed_form():
    dim, w, h = 16, 3, 2
    grid = sincos_grid(dim, w, h)
    rows, cols = [0.0, 15.0], [7.5 - 11.25, 7.5, 7.5 + 11.25]  # centre 7.5 +- 7.5 on the short side
    freqs = [1.0 / 10000 ** (k / 4) for k in range(4)]
    for r in range(h):
        for c in range(w):
            expected = ([math.sin(cols[c] * f) for f in freqs] + [math.cos(cols[c] * f) for f in freqs]
                        + [math.sin(rows[r] * f) for f in freqs] + [math.cos(rows[r] * f) for f in freqs])
            torch.testing.assert_close(grid[r * w + c], torch.tensor(expected), atol=1e-5, rtol=1e-5)


def test_residuals_are_added_after_each_block():
    main = _main_model()
    torch.manual_seed(1)
    x, context = torch.randn(1, 16, 8, 8), torch.randn(1, 5, main.config.context_in)
    y, t = torch.randn(1, main.config.pooled_in), torch.tensor([500.0])
    with torch.no_grad():
        plain = main(x, t, context, y)
        zeros = [torch.zeros(1, 16, main.config.hidden_size)] * main.config.depth
        assert torch.equal(main(x, t, context, y, control={"output": zeros}), plain)
        bump = torch.randn(1, 16, main.config.hidden_size)
        last_only = main(x, t, context, y, control={"output": [None] * (main.config.depth - 1) + [bump]})
        # after the last block only the final layer remains: check against it by hand
        hooked = {}
        handle = main.final_layer.register_forward_pre_hook(lambda m, a: hooked.update(x=a[0]))
        main(x, t, context, y)
        handle.remove()
        shift_scale = main.final_layer(hooked["x"] + bump, _c(main, t, y))
    assert not torch.equal(last_only, plain)
    expected = shift_scale.view(1, 4, 4, 2, 2, 16).permute(0, 5, 1, 3, 2, 4).reshape(1, 16, 8, 8)
    torch.testing.assert_close(last_only, expected, atol=1e-5, rtol=1e-5)


def _c(main, t, y):
    from diffusion.unet.embeddings import timestep_embedding
    return main.t_embedder(timestep_embedding(t, 256)) + main.y_embedder(y)


@pytest.mark.parametrize("kind,expected", [("blur", lambda a: a), ("canny", lambda a: a * 255 * 0.5 + 0.5),
                                           ("depth", lambda a: 1.0 - a)])
def test_hint_preprocessing_follows_the_control_type(kind, expected):
    network = build_sd35_controlnet(make_sd35_controlnet(kind))
    image = torch.rand(1, 3, 8, 8)
    assert network.config.control_type == kind
    torch.testing.assert_close(network.preprocess_hint(image), expected(image))


def _control_prompt(strength, vae=True):
    prompt = checkpoint_prompt(steps=2)
    prompt["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd3.5_large_controlnet_canny.safetensors"}}
    prompt["img"] = {"class_type": "LoadImage", "inputs": {"image": "edges.png"}}
    inputs = {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["img", 0],
              "strength": strength, "start_percent": 0.0, "end_percent": 1.0}
    if vae:
        inputs["vae"] = ["ckpt", 2]
    prompt["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": inputs}
    prompt["sample"]["inputs"]["positive"] = ["apply", 0]
    prompt["sample"]["inputs"]["negative"] = ["apply", 1]
    return prompt


@pytest.fixture
def control_engine(engine):  # noqa: F811 - the SD3 engine, with a ControlNet and a control image
    folder = engine.models("controlnet")
    os.makedirs(folder, exist_ok=True)
    save_file(make_sd35_controlnet("canny"), os.path.join(folder, "sd3.5_large_controlnet_canny.safetensors"))
    from PIL import Image
    os.makedirs(engine.services.paths.input_dir, exist_ok=True)
    edges = (np.random.default_rng(0).random((48, 64)) > 0.8).astype(np.uint8) * 255
    Image.fromarray(edges).convert("RGB").save(os.path.join(engine.services.paths.input_dir, "edges.png"))
    return engine


def test_the_controlnet_workflow_changes_the_image_and_strength_zero_does_not(control_engine):
    plain, _ = control_engine.run(checkpoint_prompt(steps=2))
    zero, _ = control_engine.run(_control_prompt(0.0))
    full, _ = control_engine.run(_control_prompt(1.0))
    for outcome in (plain, zero, full):
        assert outcome.status == "success", outcome.error
    assert np.array_equal(image(control_engine, zero), image(control_engine, plain))
    assert not np.array_equal(image(control_engine, full), image(control_engine, plain))


def test_without_a_vae_the_error_says_to_connect_one(control_engine):
    outcome, _ = control_engine.run(_control_prompt(1.0, vae=False))
    assert outcome.status == "error"
    assert "needs a VAE but none was provided" in str(outcome.error)
