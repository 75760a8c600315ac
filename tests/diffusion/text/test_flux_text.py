"""Flux's text stack against transformers' CLIP-L and T5 run by hand on the same weights: T5's last layer over a
window of at least 256 tokens is the conditioning, CLIP-L's unprojected pooled output the vector."""
import pytest
import torch

from diffusion.synthetic_sd3 import sd3_clip_state, t5_state
from diffusion.text.flux_text import FluxTextStack
from tests.diffusion.text.test_sd3_text import _unweighted, references  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def weights():
    return {"clip_l": sd3_clip_state("clip_l", False, 2), "clip_g": sd3_clip_state("clip_g", False, 3),
            "t5xxl": t5_state(False, 4)}


def test_t5_tokens_and_clip_pooled(weights, references):  # noqa: F811
    stack = FluxTextStack.from_role_weights(weights)
    assert stack.roles == ["clip_l", "t5xxl"]  # bigG is not Flux's
    windows = _unweighted(stack, "a lighthouse at dusk, oil painting")
    cond, pooled = stack.encode(windows)
    t5_ids = torch.tensor([windows["t5xxl"][0].ids()])
    l_ids = torch.tensor([windows["clip_l"][0].ids()])
    assert t5_ids.shape == (1, 256) and cond.shape == (1, 256, 256) and pooled.shape == (1, 64)
    with torch.no_grad():
        expected = references["t5xxl"](input_ids=t5_ids).last_hidden_state
        clip = references["clip_l"].text_model(input_ids=l_ids)
    torch.testing.assert_close(cond, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled, clip.pooler_output, rtol=1e-5, atol=1e-5)


def test_t5_is_required_and_a_long_prompt_grows_the_window(weights):
    with pytest.raises(ValueError, match="Flux needs T5-XXL"):
        FluxTextStack.from_role_weights({"clip_l": weights["clip_l"]})
    stack = FluxTextStack.from_role_weights({"t5xxl": weights["t5xxl"]})
    cond, pooled = stack.encode(" ".join(["word"] * 300))
    assert cond.shape[1] == 301 and not pooled.any()
