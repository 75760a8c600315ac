"""Skip layer guidance for diffusion transformers (SD3, SD3.5, Flux): a second guidance term from the model with
some of its blocks skipped, pushing the result away from what the crippled model predicts (after Perturbed
Attention Guidance, Ahn et al. 2024; SkipLayerGuidance by Stability AI for SD3.5).

While sigma is between the two percents of the schedule, each step makes one more prediction of the positive
prompt with the chosen double (joint) blocks -- and for Flux single blocks -- skipped, and adds
(cond - skipped) * scale to the guided result; `rescaling_scale` then pulls its spread back towards the
conditional prediction's. The blocks are skipped through ComfyUI's block replacement hook (`patches_replace`
"dit"), which the MMDiT and the Flux transformer honour.
"""
from __future__ import annotations

import re
from typing import List

from diffusion.sampling.guidance import Guidance
from nodes.declare import Float, Output, Socket, String, node


def _layers(text: str) -> List[int]:
    return [int(n) for n in re.findall(r"\d+", text or "")]


def _skip(args: dict, extra: dict) -> dict:
    return args


def skip_layer_guidance(model, scale: float, start_percent: float, end_percent: float, double_layers: List[int],
                        single_layers: List[int], rescaling_scale: float = 0.0):
    """A clone of MODEL with the skip-layer term as a post-CFG function (unchanged when no layer is named)."""
    from model_management.patcher_face import copy_options
    if not double_layers and not single_layers:
        return model
    sampling = model.model_sampling
    sigma_start, sigma_end = sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent)

    def post_cfg(args: dict):
        result, sigma = args["denoised"], args["sigma"]
        current = float(sigma.reshape(-1)[0])
        if scale <= 0 or not sigma_end <= current <= sigma_start or not args["cond"]:
            return result
        options = copy_options(args["model_options"])
        replace = options.setdefault("transformer_options", {}).setdefault("patches_replace", {}).setdefault("dit", {})
        for index in double_layers:
            replace[("double_block", index)] = _skip
        for index in single_layers:
            replace[("single_block", index)] = _skip
        owner = getattr(args["model"], "_owner", args["model"])
        guidance = Guidance(owner, [], None, 1.0)
        guidance.options_override = options
        skipped = guidance.predict(args["input"], sigma, [args["cond"]])[0]
        cond = args["cond_denoised"]
        result = result + (cond - skipped) * scale
        if rescaling_scale:
            factor = cond.std() / result.std()
            result = result * (rescaling_scale * factor + (1 - rescaling_scale))
        return result

    patched = model.clone()
    patched.set_model_sampler_post_cfg_function(post_cfg)
    return patched


_SCALE_TIP = "How strongly to push away from the prediction with the blocks skipped (0: off)."
_START_TIP = "Where in the schedule the term starts (0: the first step)."
_END_TIP = "Where in the schedule it ends (1: the last step)."


@node(category="advanced/guidance", display_name="SkipLayerGuidanceDiT", experimental=True,
      outputs=[Output("MODEL", tooltip="The model with skip layer guidance.")])
class SkipLayerGuidanceDiT:
    """Skip layer guidance for any diffusion transformer: skip the listed double (joint) and single blocks in an
    extra prediction and guide away from it (SD3.5: "7, 8, 9"; Flux: double "7, 8, 9")."""
    model = Socket("MODEL", tooltip="An SD3 / SD3.5 or Flux model.")
    double_layers = String("7, 8, 9", tooltip="The double-stream (joint) blocks to skip, by index.")
    single_layers = String("7, 8, 9", tooltip="The single-stream blocks to skip, by index (Flux only).")
    scale = Float(3.0, min=0.0, max=10.0, step=0.1, tooltip=_SCALE_TIP)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001, tooltip=_START_TIP)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001, tooltip=_END_TIP)
    rescaling_scale = Float(0.0, min=0.0, max=10.0, step=0.01,
                            tooltip="Pull the result's spread back towards the conditional prediction's (0: no).")

    def run(self, ctx, model, double_layers, single_layers, scale, start_percent, end_percent, rescaling_scale):
        return (skip_layer_guidance(model, scale, start_percent, end_percent, _layers(double_layers),
                                    _layers(single_layers), rescaling_scale),)


@node(category="advanced/guidance", display_name="SkipLayerGuidanceSD3", experimental=True,
      outputs=[Output("MODEL", tooltip="The model with skip layer guidance.")])
class SkipLayerGuidanceSD3:
    """Skip layer guidance for SD3 / SD3.5 (Stability AI recommends it for SD3.5 medium): skip the listed joint
    blocks in an extra prediction and guide away from it."""
    model = Socket("MODEL", tooltip="An SD3 / SD3.5 model.")
    layers = String("7, 8, 9", tooltip="The joint blocks to skip, by index.")
    scale = Float(3.0, min=0.0, max=10.0, step=0.1, tooltip=_SCALE_TIP)
    start_percent = Float(0.01, min=0.0, max=1.0, step=0.001, tooltip=_START_TIP)
    end_percent = Float(0.15, min=0.0, max=1.0, step=0.001, tooltip=_END_TIP)

    def run(self, ctx, model, layers, scale, start_percent, end_percent):
        return (skip_layer_guidance(model, scale, start_percent, end_percent, _layers(layers), []),)


NODES = [SkipLayerGuidanceDiT, SkipLayerGuidanceSD3]
