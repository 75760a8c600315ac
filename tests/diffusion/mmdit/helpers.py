"""Random-weight diffusers SD3 transformers (the independent reference) and the same weights in our layout."""
import torch

from tests.diffusion.random_weights import randomize


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
    return randomize(model)


def original_state(model):
    """The diffusers model's weights renamed into the original checkpoint layout (our converter)."""
    from diffusion.mmdit.diffusers_keys import to_original
    return to_original({k: v.clone() for k, v in model.state_dict().items()})
