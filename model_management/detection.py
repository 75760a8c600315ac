"""What a weight file is: Stable Diffusion family, prediction type and variant, read from key names and shapes.

The family follows from which text encoders a checkpoint carries (their key prefixes are fixed by the formats):
SD1.x has CLIP-L under `cond_stage_model.transformer.`, SD2.x OpenCLIP-H under `cond_stage_model.model.`, SDXL base
CLIP-L and OpenCLIP-bigG under `conditioner.embedders.0/1`, the SDXL refiner bigG alone under
`conditioner.embedders.0.model.`. A UNet-only file is placed by its structure (label embedding, projection kind).
Network sizes are never looked up in tables: diffusion/unet and diffusion/vae derive them from tensor shapes.

Prediction type cannot always be read from weights (SD2 768-v and 512-base share a layout): explicit markers win
(a `v_pred` key, `modelspec.prediction_type` metadata), then a heuristic for SD2, and the user can override it
(CheckpointLoader's config, ModelSamplingDiscrete).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

# where each family keeps its text encoders in a single-file checkpoint (defined with the encoders' key layouts)
from diffusion.text.clip_keys import REFINER_TEXT_G, SD1_TEXT, SD2_TEXT, SDXL_TEXT_G, SDXL_TEXT_L  # noqa: F401
from diffusion.text.encoder_stack import TEXT_PREFIXES as DIT_TEXT_PREFIXES

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
FLUX_VAE_PREFIX = "vae."  # Flux single-file checkpoints keep their VAE here


# Keys real checkpoints carry that are not weights we use: the training schedule's buffers, EMA copies, markers.
IGNORED_PREFIXES = ("model_ema.", "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights", "v_pred", "ztsnr",
                    "model.diffusion_model.__", "cond_stage_model.model.logit_scale",
                    "conditioner.embedders.1.model.logit_scale", "conditioner.embedders.0.model.logit_scale")


class UnsupportedModelError(ValueError):
    """The file is not a model this loader handles; the message says what it looks like instead."""


@dataclass
class ModelFamily:
    name: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner" | "sd3" | "flux"
    prediction: str = "eps"  # "eps" | "v" | "flow" (rectified flow: SD3, Flux)
    inpainting: bool = False
    zero_terminal_snr: bool = False
    text_prefixes: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    variant: str = ""  # Flux: "dev" (guidance-distilled) or "schnell"

    @property
    def latent_format(self):
        """How raw VAE latents are scaled (and shifted) for the diffusion model (latent_formats.py)."""
        from model_management.latent_formats import for_family
        return for_family(self.name)

    @property
    def latent_scale(self) -> float:
        return self.latent_format.scale_factor

    @property
    def vae_prefix(self) -> str:
        return FLUX_VAE_PREFIX if self.name == "flux" else VAE_PREFIX

    @property
    def is_sdxl(self) -> bool:
        return self.name in ("sdxl", "sdxl_refiner")


def has_prefix(state: Dict[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in state)


def describe_other(state: Dict[str, torch.Tensor]) -> str:
    """A guess at what a non-checkpoint file is, for error messages."""
    keys = [k[len(VAE_PREFIX):] if k.startswith(VAE_PREFIX) else k for k in state]
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.conv_in.") for k in keys):
        return "a standalone VAE (load it with Load VAE)"
    if any(k.startswith(("lora_unet_", "lora_te", "lora_")) or ".lora_up." in k or "lora_A" in k for k in keys):
        return "a LoRA (load it with Load LoRA)"
    if any(k.startswith(("text_model.", "transformer.resblocks.", "token_embedding")) for k in keys):
        return "a text encoder (load it with Load CLIP)"
    if any(k.startswith(("input_blocks.", "middle_block.")) for k in keys):
        return "a UNet without the rest of the checkpoint (load it with Load Diffusion Model)"
    if any(k.startswith(("control_model.", "input_hint_block.")) for k in keys):
        return "a ControlNet (load it with Load ControlNet Model)"
    sample = ", ".join(keys[:4])
    return f"an unknown architecture (first keys: {sample})"


# Other diffusion transformers, recognised by block names Flux.1 and SD3 do not have (Chroma and Flux.2 share
# Flux.1's double blocks: tested first), which this loader does not run: a clear error instead of a failed build.
TRANSFORMER_FAMILIES = (("distilled_guidance_layer.", "Chroma"), ("double_stream_modulation_img.", "Flux.2"),
                        ("double_layers.", "AuraFlow"), ("double_stream_blocks.", "HiDream"),
                        ("transformer_blocks.0.img_mod.", "Qwen-Image"), ("cap_embedder.", "Lumina 2"),
                        ("adaln_single.", "PixArt or LTX-Video"), ("patchify_proj.", "LTX-Video"),
                        ("blocks.0.cross_attn.", "Wan (video)"), ("preprocess_conv.", "Stable Audio"))


def refuse_transformers(state: Dict[str, torch.Tensor], path: str) -> None:
    """UnsupportedModelError naming the family when `state` (prefix already removed or not) is a DiT."""
    for marker, family in TRANSFORMER_FAMILIES:
        if any(k.startswith(marker) or k.startswith(UNET_PREFIX + marker) for k in state):
            raise UnsupportedModelError(f"{path}: {family} diffusion model: that model family is not supported "
                                        f"(SD1.x, SD2.x, SDXL, SD3.x and Flux.1 are)")


def unet_family(unet_state: Dict[str, torch.Tensor]) -> str:
    """The family of a bare UNet, from its structure: a label embedding means SDXL (the refiner embeds one fewer
    size id and its pooled width equals its context width); linear transformer projections mean SD2."""
    label = unet_state.get("label_emb.0.0.weight")
    proj = next((v for k, v in unet_state.items() if k.endswith(".proj_in.weight")), None)
    if label is not None:
        # y = pooled + 256 per embedded id: 6 ids (sizes, crop, target) for the base, 5 (sizes, crop, aesthetic
        # score) for the refiner, whose pooled width equals its context width (bigG alone).
        adm = label.shape[1]
        context = next((v.shape[1] for k, v in unet_state.items() if k.endswith("attn2.to_k.weight")), None)
        if (context is not None and adm - 5 * 256 == context) or adm - 6 * 256 <= 0:
            return "sdxl_refiner"
        return "sdxl"
    if proj is not None and proj.ndim == 2:
        return "sd2"
    return "sd1"


def _prediction(state: Dict[str, torch.Tensor], metadata: dict, family: str, unet_prefix: str) -> tuple:
    notes = []
    kind = str(metadata.get("modelspec.prediction_type", "")).lower()
    if "v_pred" in state or kind in ("v", "v_prediction"):
        notes.append("v-prediction (marked in the file)")
        return "v", notes
    if kind in ("epsilon", "eps"):
        return "eps", notes
    if family == "sd2":
        # SD2 768-v and 512-base share a layout. In released v-models this norm bias is visibly spread out; in
        # eps-models it stays near zero. A heuristic: override with CheckpointLoader's config if it guesses wrong.
        probe = state.get(unet_prefix + "output_blocks.11.1.transformer_blocks.0.norm1.bias")
        if probe is not None and probe.numel() > 1 and float(probe.float().std(unbiased=False)) > 0.09:
            notes.append("v-prediction (guessed from weights; override with a config if wrong)")
            return "v", notes
    return "eps", notes


def is_sd3_diffusers(state: Dict[str, torch.Tensor]) -> bool:
    """SD3's transformer in diffusers' key layout (Flux's has single-stream blocks too)."""
    from diffusion.mmdit.diffusers_keys import is_diffusers_sd3
    return is_diffusers_sd3(state) and not any(k.startswith("single_transformer_blocks.") for k in state)


def _sd3_family(state: Dict[str, torch.Tensor], prefixes: List[str]) -> ModelFamily:
    return ModelFamily("sd3", "flow", False, False, prefixes, ["SD3 / SD3.5 (MMDiT), rectified flow, shift 3.0"])


def _flux_family(transformer_keys, prefixes: List[str]) -> ModelFamily:
    """Flux dev (a guidance embedding: distilled guidance) or schnell (none)."""
    dev = any(k.startswith(("guidance_in.", UNET_PREFIX + "guidance_in.")) for k in transformer_keys)
    variant = "dev" if dev else "schnell"
    note = ("Flux.1 dev: rectified flow, exponential shift 1.15, distilled guidance" if dev else
            "Flux.1 schnell: rectified flow, no shift, no guidance")
    return ModelFamily("flux", "flow", False, False, prefixes, [note], variant)


def detect_checkpoint(state: Dict[str, torch.Tensor], metadata: Optional[dict] = None,
                      path: str = "checkpoint") -> ModelFamily:
    """The family of a full checkpoint (UNet or MMDiT + VAE + text encoders), or UnsupportedModelError."""
    metadata = metadata or {}
    if not has_prefix(state, UNET_PREFIX):
        refuse_transformers(state, path)
        raise UnsupportedModelError(f"{path}: not a Stable Diffusion checkpoint; it looks like "
                                    f"{describe_other(state)}")
    refuse_transformers(state, path)
    if has_prefix(state, UNET_PREFIX + "joint_blocks."):
        return _sd3_family(state, [p for p in DIT_TEXT_PREFIXES.values() if has_prefix(state, p)])
    if has_prefix(state, UNET_PREFIX + "double_blocks."):
        return _flux_family(state, [DIT_TEXT_PREFIXES[r] for r in ("clip_l", "t5xxl")
                                    if has_prefix(state, DIT_TEXT_PREFIXES[r])])
    if has_prefix(state, SDXL_TEXT_G):
        name, prefixes = "sdxl", [SDXL_TEXT_L, SDXL_TEXT_G]
    elif has_prefix(state, REFINER_TEXT_G):
        name, prefixes = "sdxl_refiner", [REFINER_TEXT_G]
    elif has_prefix(state, SD2_TEXT):
        name, prefixes = "sd2", [SD2_TEXT]
    elif has_prefix(state, SD1_TEXT):
        name, prefixes = "sd1", [SD1_TEXT]
    else:
        name, prefixes = unet_family({k[len(UNET_PREFIX):]: v for k, v in state.items()
                                      if k.startswith(UNET_PREFIX)}), []
    prediction, notes = _prediction(state, metadata, name, UNET_PREFIX)
    conv_in = state.get(UNET_PREFIX + "input_blocks.0.0.weight")
    inpainting = conv_in is not None and conv_in.shape[1] == 9
    return ModelFamily(name, prediction, inpainting, "ztsnr" in state, prefixes, notes)


def detect_unet_only(state: Dict[str, torch.Tensor], metadata: Optional[dict] = None,
                     path: str = "unet") -> tuple:
    """(family, unet state dict) for a standalone UNet file: bare LDM keys, or a checkpoint's UNet part."""
    metadata = metadata or {}
    if has_prefix(state, UNET_PREFIX):
        state = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    refuse_transformers(state, path)
    if is_sd3_diffusers(state):
        from diffusion.mmdit.diffusers_keys import to_original
        state = to_original(state)
    from diffusion.flux.diffusers_keys import is_diffusers_flux
    if is_diffusers_flux(state):
        from diffusion.flux.diffusers_keys import to_original as flux_to_original
        state = flux_to_original(state)
    if "joint_blocks.0.x_block.attn.qkv.weight" in state:
        return _sd3_family(state, []), state
    if "double_blocks.0.img_attn.qkv.weight" in state:
        return _flux_family(state, []), state
    if "input_blocks.0.0.weight" not in state:
        refuse_transformers(state, path)
        raise UnsupportedModelError(f"{path}: not a diffusion model (UNet, MMDiT or Flux); it looks like "
                                    f"{describe_other(state)}")
    name = unet_family(state)
    prediction, notes = _prediction(state, metadata, name, "")
    inpainting = state["input_blocks.0.0.weight"].shape[1] == 9
    return ModelFamily(name, prediction, inpainting, "ztsnr" in state, [], notes), state
