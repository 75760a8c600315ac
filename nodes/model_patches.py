"""Nodes that change how a MODEL samples (on a clone; the loaded weights are shared, never modified)."""
from __future__ import annotations

from diffusion.sampling.guidance import rescale_cfg
from nodes.declare import Boolean, Combo, Float, Output, Socket, node

PREDICTIONS = {"eps": "eps", "v_prediction": "v"}


@node(category="advanced/model", display_name="ModelSamplingDiscrete",
      outputs=[Output("MODEL", tooltip="The model with the chosen prediction type.")])
class ModelSamplingDiscrete:
    """Override a model's prediction type (eps or v) and zero-terminal-SNR setting, when detection got it wrong
    or the model was trained differently."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    sampling = Combo(list(PREDICTIONS), tooltip="What the model predicts: noise (eps) or velocity (v).")
    zsnr = Boolean(False, tooltip="Zero terminal SNR: the schedule ends at pure noise (for models trained so).")

    def run(self, ctx, model, sampling, zsnr):
        patched = model.clone()
        patched.options["prediction"] = PREDICTIONS[sampling]
        patched.options["zsnr"] = bool(zsnr)
        return (patched,)


@node(category="advanced/model", display_name="RescaleCFG",
      outputs=[Output("MODEL", tooltip="The model with rescaled guidance.")])
class RescaleCFG:
    """Rescale classifier-free guidance to avoid over-exposure at high CFG (Lin et al. 2023)."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01, tooltip="How much of the rescaled guidance to use.")

    def run(self, ctx, model, multiplier):
        patched = model.clone()
        patched.options["cfg_combine"] = rescale_cfg(multiplier)
        return (patched,)


NODES = [ModelSamplingDiscrete, RescaleCFG]
