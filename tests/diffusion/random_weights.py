"""Every parameter of a reference model random (norm scales near 1), so comparisons cannot pass on zero-initialised
gates or unit norms."""
import torch

NORM_MARKERS = ("norm_q", "norm_k", "norm_added")


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(marker in name for marker in NORM_MARKERS):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (0.5 / p.shape[-1] ** 0.5 if p.ndim > 1 else 0.05))
    return model.eval()
