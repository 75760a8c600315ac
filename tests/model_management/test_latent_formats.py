"""Latent formats: the families' published scale and shift, and process_in/out as exact inverses."""
import pytest
import torch

from model_management import latent_formats


@pytest.mark.parametrize("fmt, scale, shift, channels", [
    (latent_formats.SD15(), 0.18215, 0.0, 4), (latent_formats.SDXL(), 0.13025, 0.0, 4),
    (latent_formats.SD3(), 1.5305, 0.0609, 16), (latent_formats.Flux(), 0.3611, 0.1159, 16)])
def test_scale_shift_and_inverse(fmt, scale, shift, channels):
    raw = torch.randn(1, channels, 4, 4, dtype=torch.float64)
    assert fmt.latent_channels == channels
    assert torch.allclose(fmt.process_in(raw), (raw - shift) * scale)
    assert torch.allclose(fmt.process_out(fmt.process_in(raw)), raw)


def test_comfy_names():
    import compat.comfy.latent_formats as comfy_formats
    assert comfy_formats.SD3 is latent_formats.SD3 and comfy_formats.Flux is latent_formats.Flux
