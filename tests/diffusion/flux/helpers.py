"""Random-weight diffusers Flux transformers (the independent reference) and the same weights in our layout."""
import torch

from tests.diffusion.random_weights import randomize


def diffusers_flux(layers=2, single_layers=2, heads=2, guidance=True, context_dim=48, pooled_dim=40, seed=0,
                   in_channels=64):
    """diffusers' FluxTransformer2DModel with every parameter random (norm scales included), head size 64 split
    8 / 28 / 28 over the rotary axes (the released proportions)."""
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(patch_size=1, in_channels=in_channels, out_channels=64, num_layers=layers,
                                   num_single_layers=single_layers,
                                   attention_head_dim=64, num_attention_heads=heads, joint_attention_dim=context_dim,
                                   pooled_projection_dim=pooled_dim, guidance_embeds=guidance, axes_dims_rope=(8, 28, 28))
    return randomize(model)


def original_state(model):
    from diffusion.flux.diffusers_keys import to_original
    return to_original({k: v.clone() for k, v in model.state_dict().items()})


def pack(x):
    """[B, C, H, W] -> diffusers' packed [B, H/2 * W/2, C * 4] tokens (channel major, then the 2 x 2 patch)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens, c, h, w):
    b = tokens.shape[0]
    return tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def image_ids(h, w):
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.view(-1, 3)
