"""The bf16 policy on the diffusion transformers: the same files loaded in bf16 predict within a few percent of
fp32 (the CPU default on AMX / AVX512-BF16 machines, [4/6]); the text stacks too."""
import pytest
import torch

from model_management.checkpoints import load_checkpoint
from model_management.precision_policy import PrecisionPolicy

BF16 = PrecisionPolicy(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.float32, reason="test")


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_bf16_prediction_is_close_to_fp32(tiny_models, family):
    path = tiny_models.sd3("checkpoint") if family == "sd3" else tiny_models.flux("checkpoint")
    full = load_checkpoint(path, precision=PrecisionPolicy.full())
    half = load_checkpoint(path, precision=BF16)
    assert half.model.dtype == torch.bfloat16 and full.model.dtype == torch.float32
    cond, pooled, _ = full.clip.encode("a red fox in the snow")
    cond_h, pooled_h, _ = half.clip.encode("a red fox in the snow")
    assert _relative(cond_h, cond) < 0.03 and _relative(pooled_h, pooled) < 0.03
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 8)
    sigma = torch.tensor([0.7])
    extra = {"guidance": torch.tensor([3.5])} if family == "flux" else {}
    with torch.no_grad():
        a = full.model.apply_model(x, sigma, cond, y=pooled, **extra)
        b = half.model.apply_model(x, sigma, cond, y=pooled, **extra)
    assert b.dtype == torch.float32  # handed back in the caller's dtype
    assert 0 < _relative(b, a) < 0.03
