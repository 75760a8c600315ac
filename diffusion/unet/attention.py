"""SpatialTransformer: the text-conditioning path of the UNet (self-attention, cross-attention, GEGLU MLP).

Attention runs through diffusion/attention_kernel.py: torch's scaled_dot_product_attention, so each backend picks
its fused kernel (flash / memory-efficient on CUDA, the blocked CPU kernel elsewhere), except bf16 on a CPU, where
query-blocked matmuls run self-attention 2-3x faster than torch's fused kernel.

Patch points (`transformer_options`, the dict ComfyUI-style extensions fill; docs/architecture.md §9). A block
reads `patches` (lists of callables by point) and `patches_replace` (attention replacements keyed by
`(block kind, block number, index in the transformer)` or `(block kind, block number)`); every other key is passed
to the callables as their `extra_options`, with `n_heads` and `dim_head` added:
  - attn1_patch / attn2_patch: `(n, context, value, extra) -> (n, context, value)` before self / cross attention;
  - attn1 / attn2 replacements: `(q, k, v, extra) -> out`, all [B, tokens, heads*dim_head], between the block's
    own q/k/v and output projections;
  - attn1_output_patch / attn2_output_patch: `(out, extra) -> out` after each attention;
  - middle_patch: `(x, extra) -> x` between self and cross attention.
Without options the blocks run their plain code path.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention_kernel import scaled_dot_product_attention


def add_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`x + y`, written into x's memory when no autograd graph is being recorded (sampling runs under inference mode).

    For the module's own fresh activations only. Saves allocating (and, for large maps, page-faulting in) a new
    buffer per residual add; values and result layout are those of `x + y`. Out of place whenever that could differ
    (grad enabled -- x may be saved for backward --, type promotion, or y broadcasting x to a larger shape).
    """
    if torch.is_grad_enabled() or x.dtype != y.dtype or (x.shape != y.shape and
                                                         torch.broadcast_shapes(x.shape, y.shape) != x.shape):
        return x + y
    return x.add_(y)


class CrossAttention(nn.Module):
    """Multi-head attention of `x` over `context` (over itself when context is None); q/k/v carry no bias.

    `context_hook`, when set (hypernetworks, see model_management/hypernetwork.py), maps the context to the
    separate inputs of to_k and to_v.
    """
    context_hook = None

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                value: torch.Tensor | None = None) -> torch.Tensor:
        """Attention of x over `context` (x itself when None); `value`, when given, feeds to_v instead of the
        context (attention patches may set them apart)."""
        ctx = x if context is None else context
        if self.context_hook is None:
            ctx_k, ctx_v = ctx, (ctx if value is None else value)
        else:
            ctx_k, ctx_v = self.context_hook(ctx)
        return self.to_out(attention(self.to_q(x), self.to_k(ctx_k), self.to_v(ctx_v), self.heads))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention over [B, tokens, heads*dim] projections, result in the same layout.
    `mask` is added to (float) or selects (bool) the attention scores, broadcast to [B, heads, q tokens, k tokens]."""
    b, n, inner = q.shape
    q = q.view(b, n, heads, -1).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, -1).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, -1).transpose(1, 2)
    if mask is not None and mask.ndim == 2:
        mask = mask[None, None]
    elif mask is not None and mask.ndim == 3:
        mask = mask[:, None]
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, -1)


class GEGLU(nn.Module):
    """Linear to twice the width; the second half, through GELU, gates the first."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return x * F.gelu(gate)
        return F.gelu(gate).mul_(x)  # same product, one large temporary fewer


class FeedForward(nn.Module):
    """GEGLU MLP with 4x hidden width; `net.1` is the (p=0) dropout slot of the checkpoint layout."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-norm residual block: self-attention, cross-attention to the text, feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None,
                transformer_options: dict | None = None) -> torch.Tensor:
        if transformer_options:
            return self._patched_forward(x, context, transformer_options)
        x = add_(x, self.attn1(self.norm1(x)))
        x = add_(x, self.attn2(self.norm2(x), context))
        return add_(x, self.ff(self.norm3(x)))

    def _patched_forward(self, x: torch.Tensor, context: torch.Tensor | None, options: dict) -> torch.Tensor:
        """The same block with the patch points of the module docstring."""
        patches = options.get("patches") or {}
        replaces = options.get("patches_replace") or {}
        extra = {k: v for k, v in options.items() if k not in ("patches", "patches_replace")}
        extra["n_heads"], extra["dim_head"] = self.attn1.heads, self.attn1.to_q.out_features // self.attn1.heads
        extra.setdefault("attn_precision", None)
        block = options.get("block")
        keys = () if block is None else ((block[0], block[1], options.get("block_index", 0)), tuple(block))

        n = self.norm1(x)
        n = _attend(self.attn1, n, None, patches.get("attn1_patch"), replaces.get("attn1"), keys, extra)
        for patch in patches.get("attn1_output_patch", ()):
            n = patch(n, extra)
        x = x + n
        for patch in patches.get("middle_patch", ()):
            x = patch(x, extra)
        n = _attend(self.attn2, self.norm2(x), context, patches.get("attn2_patch"), replaces.get("attn2"), keys,
                    extra)
        for patch in patches.get("attn2_output_patch", ()):
            n = patch(n, extra)
        x = x + n
        return x + self.ff(self.norm3(x))


def _attend(attn: CrossAttention, n: torch.Tensor, context: torch.Tensor | None, before: Any, replaces: Any,
            keys: tuple, extra: dict) -> torch.Tensor:
    """One attention of a patched block: `before` patches rewrite (n, context, value); a replacement found under
    the first matching key computes attention from the block's own projections."""
    value = None
    if before:
        if context is None:
            context = n
        value = context
        for patch in before:
            n, context, value = patch(n, context, value, extra)
    replace = None
    if replaces:
        replace = next((replaces[key] for key in keys if key in replaces), None)
    if replace is None:
        return attn(n, context, value)
    if context is None:
        context = n
    if value is None:
        value = context
    out = replace(attn.to_q(n), attn.to_k(context), attn.to_v(value), extra)
    return attn.to_out(out)


class SpatialTransformer(nn.Module):
    """Feature map -> token sequence -> transformer blocks -> feature map, added to its input.

    `linear` selects SD2/SDXL-style Linear proj_in/proj_out applied to tokens; otherwise SD1-style 1x1 convs
    applied to the map.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int, linear: bool):
        super().__init__()
        inner = heads * dim_head
        self.linear = linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        if linear:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        else:
            self.proj_in = nn.Conv2d(channels, inner, 1)
            self.proj_out = nn.Conv2d(inner, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None,
                transformer_options: dict | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        if transformer_options:
            transformer_options["activations_shape"] = list(x.shape)
        x = self.norm(x)
        if not self.linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.linear:
            x = self.proj_in(x)
        for index, block in enumerate(self.transformer_blocks):
            if transformer_options:
                transformer_options["block_index"] = index
            x = block(x, context, transformer_options)
        if self.linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.linear:
            x = self.proj_out(x)
        return add_(x, x_in)
