"""Style models: Flux Redux turns a SigLIP image encoding into extra text tokens (StyleModelLoader,
StyleModelApply)."""
from __future__ import annotations

import torch

from nodes.declare import Combo, Float, Output, Socket, node
from nodes.loaders import files


class StyleModel:
    """STYLE_MODEL: a style network behind the model manager; `get_cond(clip_vision_output)` as ComfyUI's."""

    def __init__(self, network, source: str = "") -> None:
        self._network = network
        self.source = source

    @property
    def model(self):
        from diffusion.handles import resolve
        return resolve(self._network)

    def get_cond(self, clip_vision_output) -> torch.Tensor:
        tokens = clip_vision_output["last_hidden_state"]
        with torch.no_grad():
            return self.model(tokens).float().cpu()


def _load_style_network(path: str):
    from diffusion.vision.redux import build_redux, is_redux
    from model_management.file_loading import load_state_dict
    state = load_state_dict(path)
    if is_redux(state):
        return build_redux(state)
    if "style_embedding" in state:
        raise ValueError("this is a T2I-Adapter style model (SD1.x): that kind is not supported yet; Flux Redux is")
    raise ValueError("not a style model this loader knows (expected Flux Redux: redux_up / redux_down weights)")


@node(category="loaders", display_name="Load Style Model",
      outputs=[Output("STYLE_MODEL", tooltip="The style model.")])
class StyleModelLoader:
    """Load a style model (Flux Redux) from models/style_models."""
    style_model_name = Combo(files("style_models"), tooltip="The style model file (models/style_models).")

    def run(self, ctx, style_model_name):
        path = ctx.services.paths.require("style_models", style_model_name)
        models = getattr(ctx.services, "models", None)
        try:
            network = models.load_module("style_model", path, lambda: _load_style_network(path)) \
                if models is not None else _load_style_network(path)
        except ValueError as exc:
            raise ValueError(f"style_model_name: {style_model_name}: {exc}") from exc
        return (StyleModel(network, path),)


@node(category="conditioning/style_model", display_name="Apply Style Model",
      outputs=[Output("CONDITIONING", tooltip="The conditioning with the image's tokens appended.")])
class StyleModelApply:
    """Append a style model's tokens for an encoded image (Flux Redux: 729 tokens from SigLIP) to each
    conditioning's text tokens."""
    conditioning = Socket("CONDITIONING", tooltip="The conditioning to extend.")
    style_model = Socket("STYLE_MODEL", tooltip="From Load Style Model.")
    clip_vision_output = Socket("CLIP_VISION_OUTPUT", tooltip="From CLIP Vision Encode (SigLIP for Redux).")
    strength = Float(1.0, min=0.0, max=10.0, step=0.001, tooltip="How strongly the image's tokens count.")
    strength_type = Combo(["multiply", "attn_bias"], tooltip="multiply: scale the image's tokens; attn_bias: "
                          "bias attention towards them by log(strength) instead.")

    def run(self, ctx, conditioning, style_model, clip_vision_output, strength, strength_type):
        if strength_type == "attn_bias" and strength != 1.0:
            raise ValueError("strength_type: attn_bias with a strength other than 1 needs attention masks in the "
                             "diffusion model, which Tessera does not support yet; use multiply")
        cond = style_model.get_cond(clip_vision_output).flatten(start_dim=0, end_dim=1).unsqueeze(dim=0)
        if strength_type == "multiply":
            cond = cond * strength
        out = []
        for tensor, options in conditioning:
            if "attention_mask" in options:
                raise ValueError("conditioning: it carries an attention mask, which Tessera does not support yet")
            if tensor.shape[-1] != cond.shape[-1]:
                raise ValueError(f"style_model: its tokens are {cond.shape[-1]}-wide but the conditioning's are "
                                 f"{tensor.shape[-1]}-wide: use the style model made for this text encoder")
            out.append([torch.cat([tensor, cond.to(tensor)], dim=1), dict(options)])
        return (out,)


NODES = [StyleModelLoader, StyleModelApply]
