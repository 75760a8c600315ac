"""Flux Redux (`flux1-redux-dev.safetensors`), the style model StyleModelApply uses with Flux: it turns a SigLIP
image's tokens into extra text tokens. Two linear layers with SiLU between: `redux_up` (SigLIP width -> 3 x T5
width) and `redux_down` (-> T5 width), applied to every one of the 729 tokens of SigLIP's last hidden state; the
result is appended to the prompt's T5 tokens."""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn


def is_redux(state: Dict[str, torch.Tensor]) -> bool:
    return "redux_up.weight" in state and "redux_down.weight" in state


class ReduxImageEncoder(nn.Module):
    def __init__(self, image_width: int, hidden: int, text_width: int) -> None:
        super().__init__()
        self.redux_up = nn.Linear(image_width, hidden)
        self.redux_down = nn.Linear(hidden, text_width)

    @property
    def text_width(self) -> int:
        return self.redux_down.out_features

    def forward(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """[B, N, image_width] (SigLIP's last hidden state) -> [B, N, text_width]."""
        weight = self.redux_up.weight
        if image_tokens.shape[-1] != weight.shape[1]:
            raise ValueError(f"the CLIP vision output is {image_tokens.shape[-1]}-wide but this Redux model takes "
                             f"{weight.shape[1]} (SigLIP so400m: load sigclip_vision_patch14_384)")
        x = image_tokens.to(device=weight.device, dtype=weight.dtype)
        return self.redux_down(F.silu(self.redux_up(x)))


def build_redux(state: Dict[str, torch.Tensor]) -> ReduxImageEncoder:
    up, down = state["redux_up.weight"], state["redux_down.weight"]
    with torch.device("meta"):
        model = ReduxImageEncoder(up.shape[1], up.shape[0], down.shape[0])
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the Redux weights do not fit: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval().requires_grad_(False)
