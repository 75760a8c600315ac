"""Random-weight checkpoints in the exact on-disk layouts of real SD1.x, SD2.x and SDXL files.

Tests and benchmarks cannot download real models, so they make their own: the same key names, prefixes and tensor
shapes as the released files (UNet and VAE in the original LDM layout, CLIP-L in transformers' layout, OpenCLIP-H and
bigG in OpenCLIP's layout, schedule buffers included), filled with seeded random weights. The loading code runs on
them exactly as on a downloaded checkpoint. Tiny sizes build in well under a second; `--full` gives real sizes.

    python -m diffusion.synthetic_checkpoints sd1 out.safetensors [--full] [--fp16] [--inpainting] [--v]
    python -m diffusion.synthetic_checkpoints sd3 out.safetensors [--full] [--fp16] [--no-t5]

SD3 files come from diffusion/synthetic_sd3.py (SD3.5-medium's shape; its text encoders bundled).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict

import torch

from diffusion.unet import (UNetConfig, UNetModel, sd15_config, sd21_config, sdxl_base_config, sdxl_refiner_config,
                            tiny_sd1_config, tiny_sd2_config, tiny_sdxl_config, tiny_sdxl_refiner_config)

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner")
CLIP_VOCAB = 49408

# (hidden, layers, intermediate, projection) of each text encoder, full and tiny; tiny widths stay multiples of 64
# because heads are derived as hidden // 64 when a file is loaded.
TEXT_SIZES = {
    "clip_l": {"full": (768, 12, 3072, 768), "tiny": (64, 3, 128, 64)},
    "open_clip_h": {"full": (1024, 24, 4096, 1024), "tiny": (64, 3, 128, 64)},
    "open_clip_g": {"full": (1280, 32, 5120, 1280), "tiny": (64, 3, 128, 32)},
}


def _fast_sd1_unet(**overrides):
    """SD1's real layout (four levels, conv proj_in, 8 heads, 2x2 down/up sampling) at a cost a newcomer's first
    image can afford: 32 channels, one ResBlock per level, cross-attention only at the third level (16x16 latent
    cells at 512x512) and in the middle block, so no 4096-token self-attention runs: about 0.05 s per 512x512 step
    on 2 cores (bench/RESULTS.md). The generator's default; the test suite's models (`fast=False`) keep attention
    on the first levels too, as released files do, so every block kind of the real layout is exercised."""
    return UNetConfig.from_levels(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
                                  transformer_depth=(0, 0, 1, 0), transformer_depth_middle=1, context_dim=64,
                                  num_heads=8, num_head_channels=-1, use_linear_in_transformer=False).replace(**overrides)


def _unet_config(family: str, full: bool, inpainting: bool, fast: bool = False):
    extra = {"in_channels": 9} if inpainting else {}
    if fast and not full and family == "sd1":
        return _fast_sd1_unet(**extra)
    if full:
        return {"sd1": sd15_config, "sd2": sd21_config, "sdxl": sdxl_base_config,
                "sdxl_refiner": sdxl_refiner_config}[family](**extra)
    tiny = {"sd1": lambda: tiny_sd1_config(context_dim=64, **extra),
            "sd2": lambda: tiny_sd2_config(context_dim=64, **extra),
            "sdxl": lambda: tiny_sdxl_config(context_dim=128, adm_in_channels=32 + 6 * 256, **extra),
            "sdxl_refiner": lambda: tiny_sdxl_refiner_config(context_dim=64, adm_in_channels=32 + 5 * 256, **extra)}
    return tiny[family]()


def _vae_config(full: bool):
    from diffusion.vae.config import sd_vae_config, tiny_vae_config
    return sd_vae_config() if full else tiny_vae_config()


def clip_text_state(kind: str, full: bool, seed: int) -> Dict[str, torch.Tensor]:
    """A randomly initialised CLIP text model in transformers' layout (`text_model.*`, `text_projection.weight`)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    hidden, layers, inter, proj = TEXT_SIZES[kind]["full" if full else "tiny"]
    config = CLIPTextConfig(vocab_size=CLIP_VOCAB, hidden_size=hidden, intermediate_size=inter,
                            num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                            max_position_embeddings=77, projection_dim=proj,
                            hidden_act="quick_gelu" if kind == "clip_l" else "gelu")
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if kind == "clip_l":
        state.pop("text_projection.weight", None)  # SD's CLIP-L has no projection
    return state


def to_open_clip_layout(hf: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers CLIP text keys -> OpenCLIP's (fused q/k/v, transposed projection), as SD2/SDXL files store."""
    out = {"token_embedding.weight": hf["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": hf["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": hf["text_model.final_layer_norm.weight"],
           "ln_final.bias": hf["text_model.final_layer_norm.bias"],
           "logit_scale": torch.tensor(4.6052)}
    if "text_projection.weight" in hf:
        out["text_projection"] = hf["text_projection.weight"].t().contiguous()
    layer = 0
    while f"text_model.encoder.layers.{layer}.layer_norm1.weight" in hf:
        src, dst = f"text_model.encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [hf[src + f"self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")], dim=0)
            out[dst + f"attn.out_proj.{part}"] = hf[src + f"self_attn.out_proj.{part}"]
            out[dst + f"ln_1.{part}"] = hf[src + f"layer_norm1.{part}"]
            out[dst + f"ln_2.{part}"] = hf[src + f"layer_norm2.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = hf[src + f"mlp.fc1.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = hf[src + f"mlp.fc2.{part}"]
        layer += 1
    return out


def _schedule_buffers() -> Dict[str, torch.Tensor]:
    """The training schedule tensors released checkpoints carry (SD's scaled-linear betas)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return {"betas": betas.float(), "alphas_cumprod": alphas_cumprod.float(),
            "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]]).float(),
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt().float(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt().float()}


def make_checkpoint(family: str, full: bool = False, seed: int = 0, inpainting: bool = False,
                    v_prediction: bool = False, dtype: torch.dtype = torch.float32,
                    fast: bool = False) -> Dict[str, torch.Tensor]:
    """A complete single-file checkpoint state dict for `family` (see FAMILIES). `fast`: the tiny SD1 UNet with
    cross-attention only where it is cheap (see `_fast_sd1_unet`)."""
    from diffusion.vae.model import AutoencoderKL
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    state: Dict[str, torch.Tensor] = {}
    torch.manual_seed(seed)
    unet = UNetModel(_unet_config(family, full, inpainting, fast))
    state.update({"model.diffusion_model." + k: v for k, v in unet.state_dict().items()})
    del unet
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(_vae_config(full))
    state.update({"first_stage_model." + k: v for k, v in vae.state_dict().items()})
    del vae
    if family == "sd1":
        clip = clip_text_state("clip_l", full, seed + 2)
        clip["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        state.update({"cond_stage_model.transformer." + k: v for k, v in clip.items()})
    elif family == "sd2":
        state.update({"cond_stage_model.model." + k: v
                      for k, v in to_open_clip_layout(clip_text_state("open_clip_h", full, seed + 2)).items()})
    elif family == "sdxl":
        state.update({"conditioner.embedders.0.transformer." + k: v
                      for k, v in clip_text_state("clip_l", full, seed + 2).items()})
        state.update({"conditioner.embedders.1.model." + k: v
                      for k, v in to_open_clip_layout(clip_text_state("open_clip_g", full, seed + 3)).items()})
    else:
        state.update({"conditioner.embedders.0.model." + k: v
                      for k, v in to_open_clip_layout(clip_text_state("open_clip_g", full, seed + 3)).items()})
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    state.update(_schedule_buffers())  # kept in float32, as released files do
    if v_prediction:
        state["v_pred"] = torch.tensor([])
    return state


def write_checkpoint(path: str, family: str, **kwargs) -> str:
    from safetensors.torch import save_file
    state = make_checkpoint(family, **kwargs)
    save_file(state, path, metadata={"format": "pt", "tessera.synthetic": family})
    return path


# The file names workflows/ (and most shared workflows) load for each family, so a generated model runs them as is.
EXAMPLE_NAMES = {("sd1", False): "v1-5-pruned-emaonly.safetensors", ("sd1", True): "sd-v1-5-inpainting.safetensors",
                 ("sd2", False): "v2-1_768-ema-pruned.safetensors", ("sd2", True): "512-inpainting-ema.safetensors",
                 ("sdxl", False): "sd_xl_base_1.0.safetensors", ("sdxl", True): "sd_xl_base_1.0_inpainting.safetensors",
                 ("sdxl_refiner", False): "sd_xl_refiner_1.0.safetensors",
                 ("sdxl_refiner", True): "sd_xl_refiner_1.0_inpainting.safetensors",
                 ("sd3", False): "sd3.5_medium_incl_clips.safetensors"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=FAMILIES + ("sd3",))
    parser.add_argument("output", nargs="?",
                        help="the .safetensors file to write (default: models/checkpoints/ under the name the "
                             "example workflows load for that family, e.g. v1-5-pruned-emaonly.safetensors)")
    parser.add_argument("--full", action="store_true", help="real sizes instead of tiny ones")
    parser.add_argument("--fp16", action="store_true", help="store weights as float16, as released files do")
    parser.add_argument("--inpainting", action="store_true", help="the 9-channel inpainting variant")
    parser.add_argument("--v", action="store_true", help="mark the model as v-prediction")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-t5", action="store_true", help="sd3: leave T5-XXL out (4.7 B parameters at full size)")
    parser.add_argument("--every-block", action="store_true",
                        help="tiny SD1 with attention on every level but the last, as released files (what the "
                             "test suite uses; about 30x slower per step at 512x512 than the default)")
    args = parser.parse_args(argv)
    if args.output is None:
        name = EXAMPLE_NAMES[(args.family, bool(args.inpainting))]
        args.output = os.path.join("models", "checkpoints", name)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if args.family == "sd3":
        from safetensors.torch import save_file

        from diffusion.synthetic_sd3 import ALL_TEXT, make_sd3_checkpoint
        text = tuple(r for r in ALL_TEXT if not (args.no_t5 and r == "t5xxl"))
        save_file(make_sd3_checkpoint(full=args.full, seed=args.seed, text=text,
                                      dtype=torch.float16 if args.fp16 else torch.float32), args.output,
                  metadata={"format": "pt", "tessera.synthetic": "sd3"})
        print(args.output)
        return 0
    write_checkpoint(args.output, args.family, full=args.full, seed=args.seed, inpainting=args.inpainting,
                     v_prediction=args.v, dtype=torch.float16 if args.fp16 else torch.float32,
                     fast=not args.every_block)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
