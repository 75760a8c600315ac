"""Random-weight diffusers SD3 transformers (the independent reference) and the same weights in our layout."""
import torch


def diffusers_sd3(layers=3, heads=2, dual_attention_layers=(), qk_norm=None, pos_embed_max_size=16,
                  context_dim=48, pooled_dim=40, seed=0):
    """diffusers' SD3Transformer2DModel with every parameter random (norm scales included), head size 64."""
    from diffusers import SD3Transformer2DModel
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=pos_embed_max_size, patch_size=2, in_channels=16, num_layers=layers, attention_head_dim=64,
        num_attention_heads=heads, joint_attention_dim=context_dim, caption_projection_dim=64 * heads,
        pooled_projection_dim=pooled_dim, out_channels=16, pos_embed_max_size=pos_embed_max_size,
        dual_attention_layers=tuple(dual_attention_layers), qk_norm=qk_norm)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm_q" in name or "norm_k" in name or "norm_added" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.05))
    return model.eval()


def original_state(model):
    """The diffusers model's weights renamed into the original checkpoint layout (our converter)."""
    from diffusion.mmdit.diffusers_keys import to_original
    return to_original({k: v.clone() for k, v in model.state_dict().items()})
