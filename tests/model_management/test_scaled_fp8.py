"""ComfyUI's fp8 scaled files (both the `scale_weight` format and the later `weight_scale` one) load as the
dequantized weights: stored float8 times the scale, in the part's compute dtype, scales and markers dropped."""
import pytest
import torch
from safetensors.torch import save_file

from diffusion.synthetic_sd3 import make_sd3_checkpoint
from model_management.checkpoints import load_checkpoint
from model_management.file_loading import ModelFileError, load_state_dict
from model_management.precision_policy import PrecisionPolicy


def quantize(state, suffix=".scale_weight", per_row=False, markers=("model.diffusion_model.",)):
    """Every 2-D weight of the MMDiT and T5 as float8_e4m3fn / scale, ComfyUI's way; returns (file state,
    expected dequantized weights)."""
    out, expected = {}, {}
    for key, value in state.items():
        quantized = key.endswith(".weight") and value.ndim == 2 and (
            key.startswith("model.diffusion_model.") or key.startswith("text_encoders.t5xxl."))
        if not quantized:
            out[key] = value
            continue
        amax = value.abs().amax(dim=1) if per_row else value.abs().max()
        scale = (amax / 448.0).float()
        q = (value / (scale[:, None] if per_row else scale)).to(torch.float8_e4m3fn)
        out[key] = q
        out[key[:-len(".weight")] + suffix] = scale if per_row else scale.reshape(())
        out[key[:-len(".weight")] + ".scale_input"] = torch.ones(())
        expected[key] = q.float() * (scale[:, None] if per_row else scale)
    for prefix in markers:
        out[prefix + "scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out, expected


@pytest.fixture(scope="module")
def plain_state():
    return make_sd3_checkpoint()


@pytest.mark.parametrize("suffix,per_row", [(".scale_weight", False), (".weight_scale", False),
                                            (".weight_scale", True)])
def test_weights_are_stored_times_scale(tmp_path, plain_state, suffix, per_row):
    state, expected = quantize(plain_state, suffix, per_row)
    path = tmp_path / "sd3.5_large_fp8_scaled.safetensors"
    save_file(state, str(path))
    loaded = load_state_dict(str(path))
    assert not [k for k in loaded if k.endswith((suffix, ".scale_input", "scaled_fp8"))]
    for key, value in expected.items():
        assert loaded[key].dtype == torch.float32
        assert torch.equal(loaded[key], value), key
    # the bf16 policy gets the same values rounded once to bf16
    bf16 = load_state_dict(str(path), dtype_for=lambda key, stored: torch.bfloat16)
    key = next(iter(expected))
    assert torch.equal(bf16[key], expected[key].to(torch.bfloat16))


def test_scaled_checkpoint_samples_close_to_the_original(tmp_path, plain_state):
    state, _ = quantize(plain_state, markers=("model.diffusion_model.", "text_encoders.t5xxl.transformer."))
    path = tmp_path / "sd3_fp8_scaled.safetensors"
    save_file(state, str(path))
    scaled = load_checkpoint(str(path), precision=PrecisionPolicy.full())
    assert scaled.family.name == "sd3" and not scaled.leftovers
    original = {k[len("model.diffusion_model."):]: v for k, v in plain_state.items()
                if k.startswith("model.diffusion_model.")}
    got = scaled.model.unet.state_dict()
    worst = max(float(((got[k] - v).abs().max() / v.abs().max().clamp_min(1e-8))) for k, v in original.items()
                if v.ndim == 2)
    assert 0 < worst < 0.07  # e4m3 keeps 3 mantissa bits: at most 1/16 relative to the row's range
    cond, pooled, _ = scaled.clip.encode("a fox")
    assert torch.isfinite(cond).all() and cond.shape == (1, 154, 256)


def test_integer_quantized_weights_are_refused_clearly(tmp_path):
    path = tmp_path / "int8.safetensors"
    save_file({"layer.weight": torch.zeros(4, 4, dtype=torch.int8), "layer.weight_scale": torch.ones(())}, str(path))
    with pytest.raises(ModelFileError, match=r"int8\.safetensors: layer\.weight is stored as torch\.int8 with a "
                                             r"scale; only float8 scaled weights are supported"):
        load_state_dict(str(path))
