"""The one scaled-dot-product attention every network here calls: torch's fused kernel, except for bf16 on a CPU.

torch's fused CPU attention (flash-style, blocked over queries and keys) gains nothing from bf16: measured on an
AVX512-BF16 CPU it runs bf16 no faster than fp32 (its small head-dim tiles keep the bf16 dot-product units idle),
while plain bf16 matmuls run 4-5x faster than fp32 there. For bf16 CPU inference this module computes attention
per (batch, head) in query blocks instead: one matmul for a block's scores, softmax (fp32 internally, like torch's
softmax on bf16), one matmul with the values. The block's score matrix is sized to stay in the core's cache
(about 1M elements), so memory stays as bounded as the fused kernel's. Softmax is per query row, so the blocking
is exact; the only difference from the fused kernel is that scores and probabilities are rounded to bf16 between
the matmuls (relative error ~0.45 % vs fp64 on random inputs, against ~0.2 % for the fused bf16 kernel -- both
well inside bf16 inference's own noise). Measured 2-3x faster than the fused kernel on SD1.5, SDXL and VAE
self-attention shapes (about even on cross-attention over 77 text tokens) (bench/RESULTS.md, "Issue 15").

Everything else -- fp32 (so `--force-fp32` images stay bit-exact), fp16, masks, autograd, accelerators -- goes to
`torch.nn.functional.scaled_dot_product_attention` unchanged.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SCORE_BLOCK_ELEMENTS = 1 << 20  # scores per block: 2 MiB in bf16, an L2 cache's worth


def uses_blocked_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]) -> bool:
    """Whether `scaled_dot_product_attention` takes the blocked bf16 CPU path for these inputs."""
    return (mask is None and q.device.type == "cpu" and q.dtype == torch.bfloat16 == k.dtype == v.dtype
            and q.ndim == k.ndim == v.ndim == 4 and q.shape[:2] == k.shape[:2] == v.shape[:2]  # no broadcasting/GQA
            and k.shape[2] == v.shape[2] and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad
                                                                   or v.requires_grad)))


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) [+ mask]) v over [B, heads, tokens, dim] tensors, as torch's function computes it."""
    if not uses_blocked_kernel(q, k, v, attn_mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return blocked_attention(q, k, v)


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      block_elements: int = SCORE_BLOCK_ELEMENTS) -> torch.Tensor:
    """Attention per (batch, head) in blocks of query rows whose score matrix holds about `block_elements`.

    Works on the inputs' own strides (the [B, heads, tokens, dim] views callers make of [B, tokens, heads*dim]
    projections are read in place, no copy) and returns such a view of a [B, tokens, heads, dim] result, so the
    caller's reshape back to [B, tokens, heads*dim] is free. The scale is applied to q once, not to every score.
    """
    batch, heads, n, dim = q.shape
    m, dim_v = k.shape[2], v.shape[-1]
    q = q * dim ** -0.5
    out = torch.empty(batch, n, heads, dim_v, dtype=q.dtype, device=q.device)
    rows = max(16, min(n, block_elements // max(m, 1)))
    for b in range(batch):
        for h in range(heads):
            queries, keys_t, values, result = q[b, h], k[b, h].t(), v[b, h], out[b, :, h]
            for start in range(0, n, rows):
                scores = torch.mm(queries[start:start + rows], keys_t)
                result[start:start + rows] = torch.mm(torch.softmax(scores, dim=-1), values)
    return out.transpose(1, 2)
