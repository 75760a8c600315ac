"""SpatialTransformer: the text-conditioning path of the UNet (self-attention, cross-attention, GEGLU MLP).

Attention runs through torch's scaled_dot_product_attention so each backend picks its fused kernel
(flash / memory-efficient on CUDA, the blocked CPU kernel elsewhere) with no custom code here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        if self.context_hook is None:
            q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        else:
            ctx_k, ctx_v = self.context_hook(ctx)
            q, k, v = self.to_q(x), self.to_k(ctx_k), self.to_v(ctx_v)
        b, n, inner = q.shape
        h = self.heads
        q = q.view(b, n, h, -1).transpose(1, 2)
        k = k.view(b, k.shape[1], h, -1).transpose(1, 2)
        v = v.view(b, v.shape[1], h, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, inner))


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

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = add_(x, self.attn1(self.norm1(x)))
        x = add_(x, self.attn2(self.norm2(x), context))
        return add_(x, self.ff(self.norm3(x)))


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

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.linear:
            x = self.proj_in(x)
        x = x.flatten(2).transpose(1, 2)
        if self.linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.linear:
            x = self.proj_out(x)
        x = x.transpose(1, 2).reshape(b, -1, h, w)
        if not self.linear:
            x = self.proj_out(x)
        return add_(x, x_in)
