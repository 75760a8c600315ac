"""The attention kernel: the blocked bf16 CPU path computes the same attention as torch's, and only takes the inputs
it is meant for (fp32 stays bit-identical to torch's fused kernel, so --force-fp32 images do not move)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from diffusion.attention_kernel import blocked_attention, scaled_dot_product_attention, uses_blocked_kernel


def _qkv(batch, heads, n, m, dim, dim_v=None, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, dim, generator=gen)
    k = torch.randn(batch, heads, m, dim, generator=gen)
    v = torch.randn(batch, heads, m, dim_v or dim, generator=gen)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def test_blocking_is_exact_in_fp32_with_ragged_blocks_and_cross_attention():
    # 77 keys (a text context), 300 queries in blocks of 128 rows (1e4 // 77) -- the last block is partial
    q, k, v = _qkv(2, 3, 300, 77, 16, dim_v=24)
    expected = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    got = blocked_attention(q, k, v, block_elements=10_000)
    assert got.shape == (2, 3, 300, 24)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_bf16_blocked_kernel_is_within_bf16_rounding_of_fp32_attention():
    q, k, v = _qkv(2, 4, 1024, 1024, 40, dtype=torch.bfloat16, seed=1)
    reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert uses_blocked_kernel(q, k, v, None)
    got = scaled_dot_product_attention(q, k, v)
    assert got.dtype == torch.bfloat16
    relative = float((got.double() - reference).norm() / reference.norm())
    fused = F.scaled_dot_product_attention(q, k, v)
    fused_relative = float((fused.double() - reference).norm() / reference.norm())
    # bf16 carries 8 mantissa bits (0.4 % per element); the probabilities' rounding before the value matmul adds
    # about as much again. Measured 0.5 % here against the fused kernel's 0.2 %.
    assert relative < 0.01, relative
    assert fused_relative < relative < 5 * fused_relative + 1e-3


def test_other_inputs_go_to_torch_unchanged():
    q, k, v = _qkv(1, 2, 64, 64, 8)
    assert not uses_blocked_kernel(q, k, v, None)  # fp32: the --force-fp32 path keeps torch's bits
    assert torch.equal(scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
    qb, kb, vb = (t.bfloat16() for t in (q, k, v))
    mask = torch.zeros(64, 64, dtype=torch.bfloat16)
    mask[:, 32:] = float("-inf")
    assert not uses_blocked_kernel(qb, kb, vb, mask)  # masks: torch's kernel
    assert torch.equal(scaled_dot_product_attention(qb, kb, vb, attn_mask=mask),
                       F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask))
    trainable = qb.clone().requires_grad_(True)
    assert not uses_blocked_kernel(trainable, kb, vb, None)  # autograd: torch's kernel (the blocked one writes in place)
    assert uses_blocked_kernel(qb, kb, vb, None)
    assert not uses_blocked_kernel(qb, kb[:1, :1], vb[:1, :1], None)  # broadcast batch/heads: torch's kernel
    assert torch.equal(scaled_dot_product_attention(qb, kb[:, :1].expand_as(kb), vb),
                       scaled_dot_product_attention(qb, kb[:, :1].expand_as(kb).contiguous(), vb))
