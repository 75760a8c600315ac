"""ImageStitch: directions, size matching or padding, batches, channels and the gap, on small solid images."""
import pytest
import torch

from nodes.image_stitch import ImageStitch, stitch_images


def solid(batch, height, width, value, channels=3):
    return torch.full((batch, height, width, channels), float(value))


def test_without_image2_image1_comes_back_unchanged():
    a = torch.rand(1, 4, 5, 3)
    assert ImageStitch().run(None, a, "right", True, 0, "white")[0] is a


@pytest.mark.parametrize("direction,first,dim", [("right", 0.2, 2), ("left", 0.8, 2), ("down", 0.2, 1),
                                                 ("up", 0.8, 1)])
def test_directions_put_image2_on_the_named_side(direction, first, dim):
    out = stitch_images(solid(1, 4, 4, 0.2), solid(1, 4, 4, 0.8), direction, True)
    assert out.shape[dim] == 8 and out.shape[3 - dim] == 4
    head = out[0, :, :4] if dim == 2 else out[0, :4]
    assert torch.allclose(head, torch.full_like(head, first), atol=1 / 255)


def test_match_image_size_resizes_image2_keeping_its_aspect_ratio():
    out = stitch_images(solid(1, 10, 6, 0.2), solid(1, 4, 6, 0.5), "right", True)
    assert out.shape == (1, 10, 6 + 15, 3)  # image2 (6x4) to height 10: width int(10 * 1.5) = 15
    down = stitch_images(solid(1, 10, 6, 0.2), solid(1, 4, 7, 0.5), "down", True)
    assert down.shape == (1, 10 + 3, 6, 3)  # to width 6: height int(6 / 1.75) = 3


def test_without_matching_the_smaller_is_padded_centred_in_white_or_black_and_else_black():
    white = stitch_images(solid(1, 6, 2, 0.5), solid(1, 3, 2, 0.5), "right", False, 0, "white")
    assert white.shape == (1, 6, 4, 3)
    column = white[0, :, 3, 0]
    assert column.tolist() == [1.0, 0.5, 0.5, 0.5, 1.0, 1.0]  # 3 rows missing: 1 above, 2 below
    red = stitch_images(solid(1, 2, 5, 0.5), solid(1, 2, 2, 0.5), "down", False, 0, "red")
    assert red.shape == (1, 4, 5, 3)
    assert red[0, 3, :, 0].tolist() == [0.0, 0.5, 0.5, 0.0, 0.0]


def test_batches_are_extended_with_the_last_image_and_rgb_gains_alpha_beside_rgba():
    a = torch.stack([solid(1, 2, 2, v)[0] for v in (0.1, 0.3)])
    b = solid(3, 2, 2, 0.9, channels=4)
    b[..., 3] = 0.5
    out = stitch_images(a, b, "right", False)
    assert out.shape == (3, 2, 4, 4)
    assert out[2, 0, 0, 0].item() == pytest.approx(0.3)  # image1's last image repeated
    assert torch.all(out[:, :, :2, 3] == 1.0) and torch.all(out[:, :, 2:, 3] == 0.5)


def test_the_gap_has_its_colour_an_even_width_and_opaque_alpha():
    out = stitch_images(solid(1, 3, 2, 0.0), solid(1, 3, 2, 0.0), "right", False, 3, "green")
    assert out.shape == (1, 3, 2 + 4 + 2, 3)  # 3 rounds up to 4
    assert out[0, :, 2:6].reshape(-1, 3).tolist() == [[0.0, 1.0, 0.0]] * 12
    rgba = stitch_images(solid(1, 2, 2, 0.0, 4), solid(1, 2, 2, 0.0, 4), "up", False, 2, "white")
    assert rgba.shape == (1, 6, 2, 4)
    assert torch.all(rgba[0, 2:4] == 1.0)


def test_unknown_direction_or_colour_is_a_clear_error():
    with pytest.raises(ValueError, match="direction"):
        stitch_images(solid(1, 2, 2, 0), solid(1, 2, 2, 0), "sideways")
    with pytest.raises(ValueError, match="spacing_color"):
        stitch_images(solid(1, 2, 2, 0), solid(1, 2, 2, 0), "right", True, 2, "purple")
