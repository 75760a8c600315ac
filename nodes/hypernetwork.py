"""HypernetworkLoader: attach a hypernetwork to a clone of MODEL; it acts on attention only while sampling."""
from __future__ import annotations

from nodes.declare import Combo, Float, Output, Socket, node
from nodes.loaders import files


@node(category="loaders", display_name="HypernetworkLoader",
      outputs=[Output("MODEL", tooltip="The model with the hypernetwork attached.")])
class HypernetworkLoader:
    """Apply a hypernetwork (`.pt`, the common A1111 training format) to a model's attention layers. Several can
    be stacked; each acts on the result of the previous one."""
    model = Socket("MODEL", tooltip="The model to attach the hypernetwork to.")
    hypernetwork_name = Combo(files("hypernetworks"), tooltip="The hypernetwork file (models/hypernetworks).")
    strength = Float(1.0, min=-10.0, max=10.0, step=0.01,
                     tooltip="How strongly it changes the attention context (0: no effect).")

    def run(self, ctx, model, hypernetwork_name, strength):
        from model_management.hypernetwork import load_hypernetwork
        path = ctx.services.paths.require("hypernetworks", hypernetwork_name)
        network = load_hypernetwork(path)
        widths = _attention_widths(model.unet)
        if not widths & set(network.mlps):
            raise ValueError(f"hypernetwork_name: {hypernetwork_name} has layers for context widths "
                             f"{network.widths()} but this model's attention layers use {sorted(widths)}; "
                             f"it was trained for another model family")
        patched = model.clone()
        patched.options["hypernetworks"] = tuple(model.options.get("hypernetworks", ())) + ((network, strength),)
        return (patched,)


def _attention_widths(unet) -> set:
    """Context widths the UNet's attention layers see (self-attention: channels; cross-attention: text width)."""
    widths = set()
    for module in unet.modules():
        if hasattr(module, "context_hook") and hasattr(module, "to_k"):
            widths.add(module.to_k.in_features)
    return widths


NODES = [HypernetworkLoader]
