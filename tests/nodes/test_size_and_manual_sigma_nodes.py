"""GetImageSize, ImageScaleToTotalPixels, ManualSigmas and SetFirstSigma: ComfyUI's interfaces and results."""
import math

import pytest
import torch

from nodes.custom_sampling import ManualSigmas, SetFirstSigma
from nodes.image_transform import GetImageSize, ImageScaleToTotalPixels


def test_total_pixels_keeps_the_aspect_ratio_and_rounds_to_steps():
    image = torch.rand(1, 100, 200, 3)
    out = ImageScaleToTotalPixels().run(None, image, "bilinear", 1.0)[0]
    # sqrt(1048576 / 20000) = 7.2408...: 1448.2 x 724.1 -> 1448 x 724
    assert out.shape == (1, 724, 1448, 3)
    stepped = ImageScaleToTotalPixels().run(None, image, "nearest-exact", 0.01, 16)[0]
    # scale 0.72408: 144.8 / 16 = 9.05 -> 144, 72.4 / 16 = 4.53 -> 80
    assert stepped.shape == (1, 80, 144, 3)
    assert abs(out.shape[1] * out.shape[2] - 1024 * 1024) / (1024 * 1024) < 0.01


def test_total_pixels_of_a_solid_image_stays_solid_and_a_too_coarse_step_is_a_clear_error():
    image = torch.full((2, 64, 64, 3), 0.25)
    out = ImageScaleToTotalPixels().run(None, image, "lanczos", 0.25, 8)[0]
    assert out.shape == (2, 512, 512, 3)
    assert torch.allclose(out, torch.full_like(out, 0.25), atol=2 / 255)
    with pytest.raises(ValueError, match="resolution_steps"):
        ImageScaleToTotalPixels().run(None, torch.rand(1, 8, 8, 3), "area", 0.01, 256)


def test_get_image_size_returns_width_height_batch_and_shows_them():
    shown = []

    class Ctx:
        def show_text(self, text):
            shown.append(text)

    assert GetImageSize().run(Ctx(), torch.zeros(3, 48, 80, 3)) == (80, 48, 3)
    assert shown == ["width: 80, height: 48\n batch size: 3"]


def test_manual_sigmas_reads_the_numbers_as_comfyui_writes_them():
    sigmas = ManualSigmas().run(None, "1., 0.99375, 0.9875,0.725 0.421875, 0.0")[0]
    assert sigmas.dtype == torch.float32
    assert torch.allclose(sigmas, torch.tensor([1.0, 0.99375, 0.9875, 0.725, 0.421875, 0.0]))
    assert torch.equal(ManualSigmas().run(None, "14.6, -1, +2")[0], torch.tensor([14.6, -1.0, 2.0]))
    assert ManualSigmas().run(None, "none here")[0].numel() == 0


def test_set_first_sigma_replaces_only_a_copy():
    original = torch.tensor([14.61, 7.0, 0.0])
    out = SetFirstSigma().run(None, original, 999.0)[0]
    assert out.tolist() == [999.0, 7.0, 0.0]
    assert original[0].item() == pytest.approx(14.61)


def test_the_nodes_run_through_the_scheduler(engine):
    prompt = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 2, "color": 0}},
        "scale": {"class_type": "ImageScaleToTotalPixels",
                  "inputs": {"image": ["img", 0], "upscale_method": "area", "megapixels": 0.01,
                             "resolution_steps": 4}},
        "size": {"class_type": "GetImageSize", "inputs": {"image": ["scale", 0]}},
        "show_w": {"class_type": "PreviewAny", "inputs": {"source": ["size", 0]}},
        "show_h": {"class_type": "PreviewAny", "inputs": {"source": ["size", 1]}},
        "sig": {"class_type": "ManualSigmas", "inputs": {"sigmas": "1, 0.5, 0"}},
        "first": {"class_type": "SetFirstSigma", "inputs": {"sigmas": ["sig", 0], "sigma": 3.5}},
        "show_s": {"class_type": "PreviewAny", "inputs": {"source": ["first", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success", sink.of("execution_error")
    scale = math.sqrt(0.01 * 1024 * 1024 / (40 * 30))
    width, height = round(40 * scale / 4) * 4, round(30 * scale / 4) * 4
    texts = {e["node"]: e["output"]["text"][0] for e in sink.of("executed")}
    assert texts["show_w"] == str(width) and texts["show_h"] == str(height)
    assert "[3]" in texts["show_s"]  # PreviewAny shows a tensor's shape; its values are checked above
    shown = [e["text"] for e in sink.of("progress_text") if e["node"] == "size"]
    assert shown == [f"width: {width}, height: {height}\n batch size: 2"]


def test_empty_sd3_latent_has_sixteen_channels_at_an_eighth_of_the_size():
    from nodes.latent import EmptySD3LatentImage
    samples = EmptySD3LatentImage().run(None, 1024, 768, 2)[0]["samples"]
    assert samples.shape == (2, 16, 96, 128) and samples.dtype == torch.float32 and not samples.any()


def test_resolution_selector_gives_the_aspect_ratio_at_the_megapixels_rounded_to_the_multiple():
    from nodes.image_transform import ResolutionSelector
    assert ResolutionSelector().run(None, "1:1 (Square)", 1.0, 8) == (1024, 1024)
    # 16:9 at 0.4 MP: scale sqrt(419430.4 / 144) = 53.97: 863.5 -> 27 x 32 = 864, 485.7 -> 15 x 32 = 480
    assert ResolutionSelector().run(None, "16:9 (Widescreen)", 0.4, 32) == (864, 480)
    width, height = ResolutionSelector().run(None, "2:3 (Portrait Photo)", 2.0, 16)
    assert width % 16 == 0 and height % 16 == 0 and abs(width * 3 - height * 2) <= 48


def test_resize_and_pad_fits_the_image_and_pads_centred():
    from nodes.image_transform import ResizeAndPadImage
    image = torch.full((1, 10, 20, 3), 0.25)
    out = ResizeAndPadImage().run(None, image, 16, 16, "black", "nearest-exact")[0]
    # scale min(16/20, 16/10) = 0.8: a 16x8 image, 4 rows of padding above and below
    assert out.shape == (1, 16, 16, 3)
    assert torch.all(out[0, :4] == 0.0) and torch.all(out[0, 12:] == 0.0) and torch.all(out[0, 4:12] == 0.25)
    white = ResizeAndPadImage().run(None, torch.zeros(2, 30, 10, 4), 9, 9, "white", "area")[0]
    # scale 0.3: a 3x9 image, 3 columns of padding each side, alpha padded white too
    assert white.shape == (2, 9, 9, 4)
    assert torch.all(white[:, :, :3] == 1.0) and torch.all(white[:, :, 3:6] == 0.0) and torch.all(white[:, :, 6:] == 1.0)


def test_total_pixels_resamples_as_common_upscale_does_without_clamping_bicubic():
    from diffusion.image_ops import common_upscale
    image = torch.zeros(1, 16, 16, 3)
    image[:, :, 8:] = 1.0  # a hard edge: bicubic overshoots beyond 0..1 next to it
    out = ImageScaleToTotalPixels().run(None, image, "bicubic", 0.001, 1)[0]
    expected = common_upscale(image.movedim(-1, 1), 32, 32, "bicubic", "disabled").movedim(1, -1)
    assert out.shape == (1, 32, 32, 3) and torch.equal(out, expected)
    assert out.max() > 1.0 and out.min() < 0.0


def test_image_scale_to_max_dimension_keeps_the_aspect_ratio():
    import torch.nn.functional as F
    from nodes.image_transform import ImageScaleToMaxDimension
    node = ImageScaleToMaxDimension()
    tall, wide, square = torch.rand(1, 30, 20, 3), torch.rand(2, 20, 30, 3), torch.rand(1, 8, 8, 3)
    assert node.run(None, tall, "bilinear", 45)[0].shape == (1, 45, 30, 3)
    assert node.run(None, wide, "area", 45)[0].shape == (2, 30, 45, 3)
    out = node.run(None, square, "nearest-exact", 16)[0]
    assert out.shape == (1, 16, 16, 3)
    assert torch.equal(out, F.interpolate(square.movedim(-1, 1), size=(16, 16), mode="nearest-exact").movedim(1, -1))
    with pytest.raises(ValueError, match="largest_size: 0"):
        node.run(None, tall, "bilinear", 0)
