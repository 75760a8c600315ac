"""The Flux.1 transformer, in the original (BFL) checkpoints' module layout.

`state_dict()` keys are a Flux file's keys (`model.diffusion_model.` removed where a checkpoint has it), so files
load with plain `load_state_dict` (diffusers-layout files are renamed first: diffusers_keys.py).

The network (Black Forest Labs, 2024): the latent is cut into 2 x 2 patches, each flattened to a token (channel
major); text tokens (T5) and image tokens get a rotary position embedding over three axes (an image index, row,
column; text tokens sit at 0, 0, 0). A conditioning vector -- the timestep, the distilled guidance scale (dev only)
and CLIP-L's pooled text, each through a small MLP -- modulates every block (adaLN: shift, scale, gate). Double
blocks keep separate weights for the two streams and attend jointly over their concatenation; single blocks run
one stream over the concatenated tokens, with the attention's q/k/v and the MLP's input in one linear layer and
their outputs in another (parallel attention and MLP). Queries and keys are RMS-normalised per head. The output is
the flow-matching velocity; sampling turns it into x0 (diffusion/sampling/model_sampling_flow.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.attention_kernel import scaled_dot_product_attention
from diffusion.mmdit.model import block_replacements
from diffusion.unet.embeddings import timestep_embedding

from .config import FluxConfig

NORM_EPS = 1e-6
TIME_FACTOR = 1000.0  # timesteps and guidance are embedded as 1000 x their value


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + NORM_EPS)
        return normed.to(x.dtype) * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class MLPEmbedder(nn.Module):
    """`time_in` / `vector_in` / `guidance_in`: Linear, SiLU, Linear."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, dim)
        self.out_layer = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """The adaLN parameters of a block from the conditioning vector: `parts` chunks of width dim, each [B, 1, dim]."""

    def __init__(self, dim: int, parts: int):
        super().__init__()
        self.parts = parts
        self.lin = nn.Linear(dim, parts * dim)

    def forward(self, vec: torch.Tensor) -> tuple:
        return self.lin(F.silu(vec))[:, None, :].chunk(self.parts, dim=-1)


def rope_table(ids: torch.Tensor, axes_dim: tuple, theta: int) -> torch.Tensor:
    """Rotation matrices [B, 1, L, head_dim / 2, 2, 2] for token positions `ids` [B, L, 3] (one 2-D rotation per
    pair of adjacent channels; each axis takes its share of the head's channels)."""
    parts = []
    for axis, dim in enumerate(axes_dim):
        scale = torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim
        omega = 1.0 / (theta ** scale)
        angles = ids[..., axis].to(torch.float64)[..., None] * omega  # [B, L, dim / 2]
        cos, sin = torch.cos(angles), torch.sin(angles)
        parts.append(torch.stack([cos, -sin, sin, cos], dim=-1).view(*angles.shape, 2, 2))
    return torch.cat(parts, dim=-3).unsqueeze(1).float()


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of adjacent channels of x [B, H, L, D] by the table's matrices."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    out = table[..., 0] * pairs[..., 0] + table[..., 1] * pairs[..., 1]
    return out.reshape(*x.shape).type_as(x)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[B, H, L, D] each -> [B, L, H * D], queries and keys rotated first."""
    out = scaled_dot_product_attention(apply_rope(q, table), apply_rope(k, table), v)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _heads(qkv: torch.Tensor, heads: int) -> tuple:
    """[B, L, 3 * H * D] -> q, k, v as [B, H, L, D]."""
    b, n, _ = qkv.shape
    return qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def project(self, x: torch.Tensor) -> tuple:
        q, k, v = _heads(self.qkv(x), self.heads)
        q, k = self.norm(q, k, v)
        return q, k, v


class DoubleStreamBlock(nn.Module):
    def __init__(self, cfg: FluxConfig):
        super().__init__()
        dim = cfg.hidden_size
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", Modulation(dim, 6))
            setattr(self, f"{side}_norm1", nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS))
            setattr(self, f"{side}_attn", SelfAttention(dim, cfg.num_heads))
            setattr(self, f"{side}_norm2", nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS))
            setattr(self, f"{side}_mlp", nn.Sequential(nn.Linear(dim, cfg.mlp_hidden), nn.GELU(approximate="tanh"),
                                                       nn.Linear(cfg.mlp_hidden, dim)))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, table: torch.Tensor) -> tuple:
        img_mods, txt_mods = self.img_mod(vec), self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.project(_modulate(self.img_norm1(img), img_mods[0], img_mods[1]))
        txt_q, txt_k, txt_v = self.txt_attn.project(_modulate(self.txt_norm1(txt), txt_mods[0], txt_mods[1]))
        joint = attention(torch.cat([txt_q, img_q], dim=2), torch.cat([txt_k, img_k], dim=2),
                          torch.cat([txt_v, img_v], dim=2), table)
        txt_out, img_out = joint[:, :txt.shape[1]], joint[:, txt.shape[1]:]
        img = img + img_mods[2] * self.img_attn.proj(img_out)
        img = img + img_mods[5] * self.img_mlp(_modulate(self.img_norm2(img), img_mods[3], img_mods[4]))
        txt = txt + txt_mods[2] * self.txt_attn.proj(txt_out)
        txt = txt + txt_mods[5] * self.txt_mlp(_modulate(self.txt_norm2(txt), txt_mods[3], txt_mods[4]))
        return img, txt


class SingleStreamBlock(nn.Module):
    """Attention and MLP in parallel: linear1 gives q/k/v and the MLP's hidden layer, linear2 maps both back."""

    def __init__(self, cfg: FluxConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.heads, self.dim = cfg.num_heads, dim
        self.linear1 = nn.Linear(dim, dim * 3 + cfg.mlp_hidden)
        self.linear2 = nn.Linear(dim + cfg.mlp_hidden, dim)
        self.norm = QKNorm(cfg.head_dim)
        self.pre_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.modulation = Modulation(dim, 3)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(vec)
        qkv, mlp = self.linear1(_modulate(self.pre_norm(x), shift, scale)).split([3 * self.dim,
                                                                                 self.linear1.out_features - 3 * self.dim], -1)
        q, k, v = _heads(qkv, self.heads)
        q, k = self.norm(q, k, v)
        out = self.linear2(torch.cat([attention(q, k, v, table), F.gelu(mlp, approximate="tanh")], dim=2))
        return x + gate * out


class LastLayer(nn.Module):
    def __init__(self, cfg: FluxConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=NORM_EPS)
        self.linear = nn.Linear(dim, cfg.out_channels * cfg.patch_size * cfg.patch_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift[:, None], scale[:, None]))


class Flux(nn.Module):
    """Velocity predictor v(x, t, context, y, guidance) built from a FluxConfig; the UNet's forward signature plus
    `guidance` (the distilled guidance scale of dev models, FluxGuidance's value)."""

    def __init__(self, config: FluxConfig):
        super().__init__()
        self.config = cfg = config
        if sum(cfg.axes_dim) != cfg.head_dim:
            raise ValueError(f"rotary axes {cfg.axes_dim} do not add up to the head size {cfg.head_dim}")
        dim = cfg.hidden_size
        self.img_in = nn.Linear(cfg.in_channels, dim)
        self.time_in = MLPEmbedder(256, dim)
        self.vector_in = MLPEmbedder(cfg.vec_in, dim)
        self.guidance_in = MLPEmbedder(256, dim) if cfg.guidance_embed else None
        self.txt_in = nn.Linear(cfg.context_in, dim)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(cfg) for _ in range(cfg.depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(cfg) for _ in range(cfg.depth_single))
        self.final_layer = LastLayer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(self, "compute_dtype", None) or self.img_in.weight.dtype

    def positions(self, batch: int, text_tokens: int, rows: int, cols: int, device) -> torch.Tensor:
        """Token positions [B, text + rows * cols, 3]: text at (0, 0, 0), image patches at (0, row, col)."""
        grid = torch.zeros(rows, cols, 3, device=device)
        grid[..., 1] = torch.arange(rows, device=device, dtype=torch.float32)[:, None]
        grid[..., 2] = torch.arange(cols, device=device, dtype=torch.float32)[None, :]
        ids = torch.cat([torch.zeros(text_tokens, 3, device=device), grid.view(-1, 3)])
        return ids.unsqueeze(0).expand(batch, -1, -1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: Optional[torch.Tensor],
                y: Optional[torch.Tensor] = None, control: Optional[Mapping[str, Any]] = None,
                transformer_options: Optional[Mapping[str, Any]] = None,
                guidance: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x [B, 16, H, W] latents (Fill / Canny / Depth models: with their extra channels concatenated),
        timesteps [B] (sigma), context [B, T, 4096] (T5), y [B, 768] (CLIP-L pooled), guidance [B] (dev)."""
        cfg, dtype, out_dtype = self.config, self.dtype, x.dtype
        if control is not None:
            raise ValueError("ControlNets for Flux are not supported yet")
        if context is None or y is None:
            raise ValueError("Flux needs T5 text tokens (context) and CLIP-L's pooled text (y)")
        batch, channels, height, width = x.shape
        p = cfg.patch_size
        h = x.to(dtype)
        pad_h, pad_w = (-height) % p, (-width) % p
        if pad_h or pad_w:
            h = F.pad(h, (0, pad_w, 0, pad_h), mode="circular")
        rows, cols = h.shape[2] // p, h.shape[3] // p
        img = h.view(batch, channels, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, -1)
        img = self.img_in(img)
        t = torch.as_tensor(timesteps, device=x.device).reshape(-1).float()
        t = t.expand(batch) if t.numel() == 1 else t
        vec = self.time_in(timestep_embedding(t * TIME_FACTOR, 256).to(dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this Flux model is guidance-distilled (dev): it needs a guidance value")
            g = torch.as_tensor(guidance, device=x.device).reshape(-1).float()
            g = g.expand(batch) if g.numel() == 1 else g
            vec = vec + self.guidance_in(timestep_embedding(g * TIME_FACTOR, 256).to(dtype))
        vec = vec + self.vector_in(y.to(dtype))
        txt = self.txt_in(context.to(dtype))
        table = rope_table(self.positions(batch, txt.shape[1], rows, cols, x.device), cfg.axes_dim, cfg.theta)
        replace = block_replacements(transformer_options)
        for index, block in enumerate(self.double_blocks):
            patch = replace.get(("double_block", index))
            if patch is None:
                img, txt = block(img, txt, vec, table)
                continue

            def original(args, block=block):
                out_img, out_txt = block(args["img"], args["txt"], args["vec"], args["pe"])
                return {"img": out_img, "txt": out_txt}
            out = patch({"img": img, "txt": txt, "vec": vec, "pe": table}, {"original_block": original})
            img, txt = out["img"], out["txt"]
        joint = torch.cat([txt, img], dim=1)
        for index, block in enumerate(self.single_blocks):
            patch = replace.get(("single_block", index))
            if patch is None:
                joint = block(joint, vec, table)
                continue
            out = patch({"img": joint, "vec": vec, "pe": table},
                        {"original_block": lambda args, block=block: {"img": block(args["img"], args["vec"],
                                                                                   args["pe"])}})
            joint = out["img"]
        img = self.final_layer(joint[:, txt.shape[1]:], vec)  # [B, rows * cols, C * p * p]
        out = img.view(batch, rows, cols, cfg.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        out = out.reshape(batch, cfg.out_channels, rows * p, cols * p)
        return out[:, :, :height, :width].to(out_dtype)
