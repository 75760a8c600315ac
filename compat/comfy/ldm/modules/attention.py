"""`comfy.ldm.modules.attention`: our UNet's attention (diffusion/unet/attention.py) under ComfyUI's names.

`optimized_attention(q, k, v, heads, mask=None, ...)` takes and returns [B, tokens, heads*dim_head] unless
`skip_reshape` (inputs already [B, heads, tokens, dim]) / `skip_output_reshape` (result left [B, heads, tokens,
dim]); it runs diffusion/attention_kernel.py, our one attention kernel (torch's scaled_dot_product_attention, blocked
matmuls for bf16 on a CPU).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch

from diffusion.attention_kernel import scaled_dot_product_attention
from diffusion.unet.attention import (BasicTransformerBlock, CrossAttention, FeedForward, GEGLU,  # noqa: F401
                                      SpatialTransformer, attention)


def optimized_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        mask: Optional[torch.Tensor] = None, attn_precision: Any = None, skip_reshape: bool = False,
                        skip_output_reshape: bool = False, **kwargs: Any) -> torch.Tensor:
    if skip_reshape:
        b, _, n, d = q.shape
        if mask is not None and mask.ndim == 3:
            mask = mask[:, None]
        out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out if skip_output_reshape else out.transpose(1, 2).reshape(b, n, heads * d)
    out = attention(q, k, v, heads, mask)
    if skip_output_reshape:
        b, n, inner = out.shape
        return out.view(b, n, heads, inner // heads).transpose(1, 2)
    return out


attention_pytorch = optimized_attention
attention_basic = optimized_attention
attention_split = optimized_attention
attention_sub_quad = optimized_attention
optimized_attention_masked = optimized_attention


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False) -> Callable:
    return optimized_attention


def wrap_attn(func: Callable) -> Callable:
    """Decorate an attention function so that `transformer_options["optimized_attention_override"]`, when a
    caller passes one, runs instead (called with the original function and the same arguments)."""
    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        options = kwargs.get("transformer_options")
        if options and "optimized_attention_override" in options:
            return options["optimized_attention_override"](func, *args, **kwargs)
        return func(*args, **kwargs)
    return wrapped


class SpatialVideoTransformer(SpatialTransformer):
    """SVD's transformer with temporal attention: Tessera has no video models, so constructing one is refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("SpatialVideoTransformer (Stable Video Diffusion) is not supported: Tessera has no video "
                         "models")
