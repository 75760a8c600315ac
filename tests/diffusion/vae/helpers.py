"""Shared test helpers: random-weight VAEs and their diffusers twins (the independent reference)."""
import torch

from diffusion.vae import AutoencoderKL, VAEConfig


def random_vae(config: VAEConfig, seed: int = 0) -> AutoencoderKL:
    """A VAE with every parameter random, norms included (default init leaves them at 1/0, hiding mistakes)."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(config)
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if ".norm" in name or "norm_out" in name or name.split(".")[-2].startswith("norm"):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return vae.eval()


def diffusers_config(config: VAEConfig) -> dict:
    n = len(config.ch_mult)
    assert config.z_channels == config.embed_dim, "diffusers has one latent width for both"
    return dict(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.widths,
        layers_per_block=config.num_res_blocks,
        latent_channels=config.z_channels,
        norm_num_groups=config.norm_groups,
        use_quant_conv=config.quant_conv,
        use_post_quant_conv=config.quant_conv,
    )


def diffusers_twin(vae: AutoencoderKL, state_dict=None):
    """The same weights in diffusers' AutoencoderKL via its own LDM converter; asserts a complete, strict load."""
    from diffusers import AutoencoderKL as DiffusersVAE
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    sd = state_dict if state_dict is not None else vae.state_dict()
    checkpoint = {"first_stage_model." + k: v.clone() for k, v in sd.items()}
    cfg = diffusers_config(vae.config)
    converted = convert_ldm_vae_checkpoint(checkpoint, cfg)
    assert len(converted) == len(sd), f"converter consumed {len(converted)} of {len(sd)} keys"
    ref = DiffusersVAE(**cfg)
    missing, unexpected = ref.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    assert set(converted) == set(ref.state_dict())
    return ref.eval()
