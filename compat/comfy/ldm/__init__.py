"""`comfy.ldm`: the latent-diffusion building blocks packs import, which are ours (diffusion/unet, diffusion/vae)."""
