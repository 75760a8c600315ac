"""`comfy.k_diffusion`: the k-diffusion-style sampling functions packs call, which are ours (diffusion/sampling)."""
