"""The SD3 / SD3.5 multimodal diffusion transformer (MMDiT), in the original checkpoints' module layout.

`state_dict()` keys are a single-file checkpoint's `model.diffusion_model.*` keys with that prefix removed, so
files load with plain `load_state_dict` (diffusers-layout files are renamed first: diffusers_keys.py).

The network (Esser et al. 2024, "Scaling Rectified Flow Transformers"): the latent is cut into p x p patches
(a strided conv) and given the centre crop of a stored 2-D position grid; text tokens go through one linear layer.
Each joint block has two streams with their own weights -- `context_block` for text, `x_block` for the image --
that attend jointly over the concatenated tokens; both are modulated (adaLN-Zero: shift, scale, gate) by the
timestep embedding plus the pooled-text embedding. The last block's text stream stops after its attention input
(`pre_only`: no output projection, no MLP). SD3.5 normalises queries and keys per head (RMSNorm, `ln_q`/`ln_k`);
SD3.5 medium (MMDiT-X) gives some image streams a second, image-only self-attention (`attn2`) with its own
modulation. A final adaLN layer and a linear layer map tokens back to p x p x channels. The output is the
flow-matching velocity; sampling turns it into x0 (diffusion/sampling/model_sampling_flow.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention_kernel import scaled_dot_product_attention
from diffusion.unet.embeddings import timestep_embedding

from .config import MMDiTConfig

NORM_EPS = 1e-6


def block_replacements(transformer_options: Optional[Mapping[str, Any]]) -> Mapping[tuple, Any]:
    """ComfyUI's block replacements for diffusion transformers: `transformer_options["patches_replace"]["dit"]`
    maps ("double_block", i) (and Flux's ("single_block", i)) to `patch(args, {"original_block": fn})`, which
    returns the block's outputs -- or its inputs unchanged, to skip it (SkipLayerGuidance)."""
    return ((transformer_options or {}).get("patches_replace") or {}).get("dit") or {}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift.unsqueeze(1), x, 1 + scale.unsqueeze(1))


class RMSNorm(nn.Module):
    """Per-head query/key normalisation of SD3.5 (a learned scale, no bias)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + NORM_EPS)
        return normed.to(x.dtype) * self.weight


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Embedder(nn.Module):
    """`t_embedder` / `y_embedder`: Linear, SiLU, Linear (keys mlp.0 and mlp.2)."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class SelfAttention(nn.Module):
    """qkv projection (with optional per-head RMSNorm of q and k) and output projection; the attention itself
    runs across streams in JointBlock."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, pre_only: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = None if pre_only else nn.Linear(dim, dim)
        self.ln_q = RMSNorm(dim // heads) if qk_norm else None
        self.ln_k = RMSNorm(dim // heads) if qk_norm else None

    def split_qkv(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, L, dim] -> q, k, v as [B, L, heads, head_dim]."""
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).unbind(2)
        if self.ln_q is not None:
            q, k = self.ln_q(q), self.ln_k(k)
        return q, k, v


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, L, heads, d] each -> [B, L, heads * d]."""
    out = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


class StreamBlock(nn.Module):
    """One stream of a joint block (`context_block` or `x_block`)."""

    def __init__(self, cfg: MMDiTConfig, pre_only: bool = False, self_attention: bool = False):
        super().__init__()
        dim = cfg.hidden_size
        self.pre_only, self.self_attention = pre_only, self_attention
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.attn = SelfAttention(dim, cfg.num_heads, cfg.qk_norm, pre_only)
        self.attn2 = SelfAttention(dim, cfg.num_heads, cfg.qk_norm) if self_attention else None
        if not pre_only:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
            self.mlp = Mlp(dim, cfg.mlp_hidden)
        self.chunks = 2 if pre_only else (9 if self_attention else 6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, self.chunks * dim))

    def pre_attention(self, x: torch.Tensor, c: torch.Tensor) -> tuple:
        """(q, k, v) for the joint attention, and what post_attention needs."""
        mods = self.adaLN_modulation(c).chunk(self.chunks, dim=1)
        normed = self.norm1(x)
        qkv = self.attn.split_qkv(modulate(normed, mods[0], mods[1]))
        second = None
        if self.self_attention:
            second = self.attn2.split_qkv(modulate(normed, mods[6], mods[7]))
        return qkv, (x, mods, second)

    def post_attention(self, attn_out: torch.Tensor, x: torch.Tensor, mods: tuple, second) -> torch.Tensor:
        _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[:6]
        x = torch.addcmul(x, gate_msa.unsqueeze(1), self.attn.proj(attn_out))
        if second is not None:
            x = torch.addcmul(x, mods[8].unsqueeze(1), self.attn2.proj(attention(*second)))
        return torch.addcmul(x, gate_mlp.unsqueeze(1), self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))


class JointBlock(nn.Module):
    def __init__(self, cfg: MMDiTConfig, index: int):
        super().__init__()
        last = index == cfg.depth - 1
        self.context_block = StreamBlock(cfg, pre_only=last)
        self.x_block = StreamBlock(cfg, self_attention=index in cfg.self_attention_layers)

    def forward(self, context: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> tuple:
        (cq, ck, cv), context_rest = self.context_block.pre_attention(context, c)
        (xq, xk, xv), x_rest = self.x_block.pre_attention(x, c)
        joint = attention(torch.cat([cq, xq], 1), torch.cat([ck, xk], 1), torch.cat([cv, xv], 1))
        n_context = context.shape[1]
        context_out, x_out = joint[:, :n_context], joint[:, n_context:]
        context = None if self.context_block.pre_only else self.context_block.post_attention(context_out,
                                                                                            *context_rest)
        return context, self.x_block.post_attention(x_out, *x_rest)


class FinalLayer(nn.Module):
    def __init__(self, cfg: MMDiTConfig):
        super().__init__()
        dim, p = cfg.hidden_size, cfg.patch_size
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.linear = nn.Linear(dim, p * p * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class MMDiT(nn.Module):
    """Velocity predictor v(x, t, context, y) built from an MMDiTConfig; the forward signature of the UNet's."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = cfg = config
        dim = cfg.hidden_size
        self.x_embedder = PatchEmbed(cfg)
        self.t_embedder = Embedder(256, dim)
        self.y_embedder = Embedder(cfg.pooled_in, dim) if cfg.pooled_in else None
        self.context_embedder = nn.Linear(cfg.context_in, dim)
        self.register_buffer("pos_embed", torch.zeros(1, cfg.pos_embed_max_size ** 2, dim))
        self.joint_blocks = nn.ModuleList(JointBlock(cfg, i) for i in range(cfg.depth))
        self.final_layer = FinalLayer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, "compute_dtype", None) or self.context_embedder.weight.dtype

    def cropped_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """The centre h x w patches of the stored position grid, as [1, h*w, dim]."""
        size = self.config.pos_embed_max_size
        if h > size or w > size:
            raise ValueError(f"{h * self.config.patch_size}x{w * self.config.patch_size} latent is larger than "
                             f"this model's position grid ({size * self.config.patch_size} a side)")
        top, left = (size - h) // 2, (size - w) // 2
        grid = self.pos_embed.view(1, size, size, -1)[:, top:top + h, left:left + w, :]
        return grid.reshape(1, h * w, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float, context: torch.Tensor | None,
                y: torch.Tensor | None = None, control: Mapping[str, Any] | None = None,
                transformer_options: Optional[Mapping[str, Any]] = None) -> torch.Tensor:
        """x [B, C, H, W] latents, timesteps [B] (sigma * 1000), context [B, T, context_in], y [B, pooled_in];
        control {"output": [residual per joint block]} (diffusion/mmdit/controlnet.py) is added to the image
        tokens after each block."""
        cfg, dtype, out_dtype = self.config, self.dtype, x.dtype
        batch, _, height, width = x.shape
        p = cfg.patch_size
        pad_h, pad_w = (-height) % p, (-width) % p
        h = x.to(dtype)
        if pad_h or pad_w:
            h = F.pad(h, (0, pad_w, 0, pad_h), mode="circular")
        gh, gw = h.shape[2] // p, h.shape[3] // p
        tokens = self.x_embedder(h) + self.cropped_pos_embed(gh, gw).to(dtype)
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        c = self.t_embedder(timestep_embedding(t, 256).to(dtype))
        if self.y_embedder is not None:
            if y is None:
                raise ValueError(f"this MMDiT is conditioned on pooled text: pass y [B, {cfg.pooled_in}]")
            c = c + self.y_embedder(y.to(dtype))
        if context is None:
            raise ValueError("an MMDiT needs text tokens (context)")
        ctx = self.context_embedder(context.to(dtype))
        replace = block_replacements(transformer_options)
        residuals = list((control or {}).get("output") or [])  # SD3.5 ControlNets: one per joint block
        for index, block in enumerate(self.joint_blocks):
            patch = replace.get(("double_block", index))
            if patch is None:
                ctx, tokens = block(ctx, tokens, c)
            else:
                def original(args, block=block):
                    txt, img = block(args["txt"], args["img"], args["vec"])
                    return {"txt": txt, "img": img}
                out = patch({"img": tokens, "txt": ctx, "vec": c}, {"original_block": original})
                ctx, tokens = out["txt"], out["img"]
            if index < len(residuals) and residuals[index] is not None:
                tokens = tokens + residuals[index].to(tokens)
        out = self.final_layer(tokens, c)  # [B, gh*gw, p*p*C]
        out = out.view(batch, gh, gw, p, p, cfg.out_channels).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(batch, cfg.out_channels, gh * p, gw * p)
        return out[:, :, :height, :width].to(out_dtype)
