"""Inpainting on tiny real-layout checkpoints: VAEEncodeForInpaint and InpaintModelConditioning outputs computed
independently, noise-mask semantics end to end, what a 9-channel UNet really receives (forward hook), and the example
inpaint/outpaint workflows."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model_management.checkpoints import load_checkpoint
from nodes.inpaint import InpaintModelConditioning, VAEEncodeForInpaint
from nodes.sampling import common_ksampler
from tests.nodes.test_model_nodes import ModelEngine

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "workflows")
SCALE = 0.18215


@pytest.fixture(scope="module")
def plain(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"))


@pytest.fixture(scope="module")
def inpainting(tiny_models):
    loaded = load_checkpoint(tiny_models.checkpoint("sd1", inpainting=True))
    assert loaded.model.family.inpainting and loaded.model.unet.config.in_channels == 9
    return loaded


def conditioning(loaded, text):
    return [[loaded.clip.encode(text)[0], {}]]


def greyed(pixels, mask):
    """Independent: a copy with every pixel whose mask rounds to 1 set to 0.5."""
    out = pixels.clone()
    hole = mask.round().bool()  # [B, H, W]
    out[hole] = 0.5
    return out


def dilated(mask, side):
    """Independent, from the stated rule: output pixel (i, j) is 1 when the rounded mask has a 1 anywhere in the
    side x side window whose top-left corner is (i - p, j - p), p = ceil((side - 1) / 2) (so an even window reaches
    one pixel further up/left than down/right)."""
    binary = mask.round()
    pad = -(-(side - 1) // 2)
    out = torch.zeros_like(binary)
    height, width = binary.shape[-2:]
    for b, i, j in binary.nonzero().tolist():  # each masked pixel lights the outputs whose window holds it
        out[b, max(0, i - side + 1 + pad):min(height, i + pad + 1), max(0, j - side + 1 + pad):min(width, j + pad + 1)] = 1.0
    return out


class Recorder:
    """Forward pre-hook on the UNet: keeps every input x it is called with."""

    def __init__(self, module):
        self.inputs = []
        self.handle = module.register_forward_pre_hook(lambda mod, args: self.inputs.append(args[0].detach().clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# -- the nodes ------------------------------------------------------------------------------------------------------

def test_encode_for_inpaint_crops_greys_and_grows(plain):
    torch.manual_seed(0)
    pixels = torch.rand(2, 70, 75, 3)
    mask = torch.zeros(1, 70, 75)
    mask[0, 20:30, 30:40] = 1.0
    mask[0, 50, 10] = 0.6  # rounds to 1
    latent = VAEEncodeForInpaint().run(None, pixels, plain.vae, mask, 3)[0]
    crop_pixels, crop_mask = pixels[:, 3:67, 1:73], mask[:, 3:67, 1:73]  # centred to 64x72
    expected = plain.vae.encode(greyed(crop_pixels, crop_mask.expand(2, -1, -1)))
    assert torch.allclose(latent["samples"], expected, atol=1e-5)
    assert latent["noise_mask"].shape == (2, 1, 64, 72)
    assert torch.equal(latent["noise_mask"][:, 0], dilated(crop_mask, 3).expand(2, -1, -1))
    unchanged = VAEEncodeForInpaint().run(None, pixels, plain.vae, mask, 0)[0]["noise_mask"]
    assert torch.equal(unchanged[0, 0], crop_mask[0].round())


@pytest.mark.parametrize("side", [1, 2, 5, 6, 9])
def test_grow_mask_by_is_the_side_of_a_window_not_a_radius(plain, side):
    mask = torch.zeros(1, 32, 32)
    mask[0, 10:13, 14] = 1.0
    mask[0, 0, 31] = 0.7   # a corner pixel: the window is cut by the border
    mask[0, 20, 5] = 0.4   # rounds to 0: grows nothing
    grown = VAEEncodeForInpaint().run(None, torch.rand(1, 32, 32, 3), plain.vae, mask, side)[0]["noise_mask"]
    assert torch.equal(grown[0, 0], dilated(mask, side)[0])
    if side == 6:  # rows 10..12 grow to 7..14 (3 up, 2 down), columns 14 to 11..16
        # rows 10..12 grow to 8..15 (2 up, 3 down), column 14 to 12..17
        assert grown[0, 0, 8:16, 12:18].all() and grown[0, 0].sum() == 8 * 6 + grown[0, 0, :4, 28:].sum()
        assert not grown[0, 0, 7, 14] and not grown[0, 0, 12, 11] and not grown[0, 0, 16, 14]


def test_encode_for_inpaint_errors_name_the_input(plain):
    with pytest.raises(ValueError, match="mask"):
        VAEEncodeForInpaint().run(None, torch.rand(2, 16, 16, 3), plain.vae, torch.zeros(3, 16, 16), 0)
    with pytest.raises(ValueError, match="pixels"):
        VAEEncodeForInpaint().run(None, torch.rand(16, 16, 3), plain.vae, torch.zeros(1, 16, 16), 0)


def test_inpaint_model_conditioning_outputs(plain):
    torch.manual_seed(1)
    pixels = torch.rand(1, 64, 64, 3)
    mask = torch.zeros(1, 32, 32)  # half resolution: resized to the image
    mask[:, 8:16, 8:24] = 1.0
    positive = [[torch.zeros(1, 77, 64), {"strength": 0.5}]]
    negative = [[torch.ones(1, 77, 64), {}]]
    pos, neg, latent = InpaintModelConditioning().run(None, positive, negative, plain.vae, pixels, mask, True)
    full_mask = torch.nn.functional.interpolate(mask[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(latent["samples"], plain.vae.encode(pixels), atol=1e-5)
    assert torch.equal(latent["noise_mask"], full_mask)
    erased = plain.vae.encode(greyed(pixels, full_mask[:, 0]))
    for out, given in ((pos, positive), (neg, negative)):
        assert out[0][0] is given[0][0] and "concat_latent_image" not in given[0][1]  # inputs untouched
        assert torch.allclose(out[0][1]["concat_latent_image"], erased, atol=1e-5)
        assert torch.equal(out[0][1]["concat_mask"], full_mask)
    assert pos[0][1]["strength"] == 0.5
    without = InpaintModelConditioning().run(None, positive, negative, plain.vae, pixels, mask, False)[2]
    assert "noise_mask" not in without


# -- sampling -------------------------------------------------------------------------------------------------------

def block_mask():
    """64x64 pixels, the top-left 32x32 masked: exactly latent cells [:4, :4], so resizing to 8x8 is exact."""
    mask = torch.zeros(1, 64, 64)
    mask[:, :32, :32] = 1.0
    cells = torch.zeros(8, 8)
    cells[:4, :4] = 1.0
    return mask, cells


def test_nine_channel_model_receives_mask_and_masked_latent(inpainting):
    torch.manual_seed(2)
    pixels = torch.rand(1, 64, 64, 3)
    mask, cells = block_mask()
    pos, neg, latent = InpaintModelConditioning().run(None, conditioning(inpainting, "a boat"),
                                                      conditioning(inpainting, ""), inpainting.vae, pixels, mask,
                                                      True)
    erased_latent = inpainting.vae.encode(greyed(pixels, mask)) * SCALE
    with Recorder(inpainting.model.unet) as rec:
        out = common_ksampler(None, inpainting.model, 3, 3, 6.0, "euler", "normal", pos, neg, latent)
    assert len(rec.inputs) == 3
    for x in rec.inputs:
        assert x.shape == (2, 9, 8, 8)  # positive and negative batched, 4 + 1 + 4 channels
        assert torch.equal(x[:, 4], cells.expand(2, 8, 8))
        assert torch.allclose(x[:, 5:], erased_latent.expand(2, -1, -1, -1), atol=1e-5)
    original = latent["samples"]
    assert torch.allclose(out["samples"][..., 4:, :], original[..., 4:, :], atol=1e-4)  # outside the mask: kept
    assert not torch.allclose(out["samples"][..., :4, :4], original[..., :4, :4], atol=1e-2)


def test_nine_channel_model_runs_plain_text_to_image(inpainting):
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    with Recorder(inpainting.model.unet) as rec:
        out = common_ksampler(None, inpainting.model, 5, 2, 1.0, "euler", "normal",
                              conditioning(inpainting, "a cat"), conditioning(inpainting, ""), latent)
    assert torch.isfinite(out["samples"]).all()
    grey = torch.tensor([0.8223, -0.6876, 0.6364, 0.1380]).view(1, 4, 1, 1)
    for x in rec.inputs:
        assert x.shape == (2, 9, 8, 8)  # cfg 1: no negative
        assert torch.equal(x[:, 4], torch.ones(2, 8, 8))
        assert torch.allclose(x[:, 5:], grey.expand(2, 4, 8, 8))


def test_nine_channel_model_with_encode_for_inpaint_sees_the_noise_mask(inpainting):
    torch.manual_seed(3)
    pixels = torch.rand(1, 64, 64, 3)
    mask, cells = block_mask()
    latent = VAEEncodeForInpaint().run(None, pixels, inpainting.vae, mask, 0)[0]
    with Recorder(inpainting.model.unet) as rec:
        common_ksampler(None, inpainting.model, 3, 2, 4.0, "euler", "karras", conditioning(inpainting, "x"),
                        conditioning(inpainting, ""), latent)
    for x in rec.inputs:
        assert torch.equal(x[:, 4], cells.expand(2, 8, 8))
        assert torch.allclose(x[:, 5:], (latent["samples"] * SCALE).expand(2, -1, -1, -1), atol=1e-6)


# -- through the engine, and the example workflows ---------------------------------------------------------------------

NAMES = {"v1-5-pruned-emaonly.safetensors": {}, "sd-v1-5-inpainting.safetensors": {"inpainting": True}}


@pytest.fixture
def engine(tmp_path, tiny_models):
    eng = ModelEngine(tmp_path)
    for name, variant in NAMES.items():
        os.symlink(tiny_models.checkpoint("sd1", **variant), os.path.join(eng.models("checkpoints"), name))
    inputs = eng.services.paths.input_dir
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(picture).save(os.path.join(inputs, "example.png"))
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:32, :32] = 0  # transparent top-left: LoadImage's mask is 1 there
    Image.fromarray(np.dstack([picture, alpha])).save(os.path.join(inputs, "inpaint_example.png"))
    white = np.zeros((64, 64, 3), np.uint8)
    white[:32, :32] = 255
    Image.fromarray(white).save(os.path.join(inputs, "example_mask.png"))
    return eng


def load(name, **overrides):
    with open(os.path.join(WORKFLOWS, f"{name}.api.json")) as f:
        prompt = json.load(f)
    for key, value in overrides.items():
        node, field = key.split("__")
        prompt[node]["inputs"][field] = value
    return prompt


def test_unmasked_region_is_kept_at_full_denoise(engine):
    """LoadImage (alpha mask) -> VAEEncodeForInpaint -> KSampler at denoise 1 on an ordinary model: where the grown
    noise mask is 0 the result is the encoded input, exactly."""
    prompt = load("inpaint", **{"4__ckpt_name": "v1-5-pruned-emaonly.safetensors", "3__steps": 4})
    prompt["before"] = {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "before"}}
    prompt["after"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "after"}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    out_dir = engine.services.paths.output_dir
    before = load_file(os.path.join(out_dir, "before_00001_.latent"))["latent_tensor"]
    after = load_file(os.path.join(out_dir, "after_00001_.latent"))["latent_tensor"]
    # mask 32x32 px grown by 6 = 38 px: latent rows and columns from 5 on sample only unmasked pixels
    assert torch.allclose(after[..., 5:, :], before[..., 5:, :], atol=1e-4)
    assert torch.allclose(after[..., :, 5:], before[..., :, 5:], atol=1e-4)
    assert not torch.allclose(after[..., :4, :4], before[..., :4, :4], atol=1e-2)


@pytest.mark.parametrize("name,size", [("inpaint", (64, 64)), ("inpaint_model_conditioning", (64, 64)),
                                       ("outpaint", (96, 64))])
def test_example_workflows_run_on_tiny_models(engine, name, size):
    overrides = {"3__steps": 3}
    if name == "outpaint":
        overrides["12__right"] = 32
    outcome, sink = engine.run(load(name, **overrides))
    assert outcome.status == "success", outcome.error
    info = outcome.outputs["9"]["images"][0]
    with Image.open(os.path.join(engine.services.paths.output_dir, info["subfolder"], info["filename"])) as image:
        assert image.size == size
    assert sink.of("progress")


@pytest.mark.parametrize("name", ["inpaint", "inpaint_model_conditioning", "outpaint"])
def test_ui_twins_convert_to_the_api_files(engine, name):
    from graph.ui_format import ui_to_api
    with open(os.path.join(WORKFLOWS, f"{name}.json")) as f:
        ui = json.load(f)
    converted = ui_to_api(ui, engine.catalogue, engine.services)
    expected = load(name)
    assert {k: v["class_type"] for k, v in converted.items()} == {k: v["class_type"] for k, v in expected.items()}
    for node_id, node in expected.items():
        assert converted[node_id]["inputs"] == node["inputs"], node_id
