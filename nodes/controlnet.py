"""ControlNet nodes: load ControlNets (and the other control models) and attach them to conditioning.

Applying a ControlNet never modifies the incoming conditioning: each entry is copied with a new "control" option, a
`diffusion.controlnet.control.ControlRuntime` that wraps the control already there (if any), so chaining apply
nodes stacks ControlNets and their residuals add up during sampling.
"""
from __future__ import annotations

from model_management.file_loading import ModelFileError
from nodes.declare import Combo, Float, Output, Socket, node
from nodes.loaders import files

COND = "CONDITIONING"


def _load(ctx, control_net_name: str, model=None):
    """Through the model manager when there is one (read once, RAM-budgeted, evictable). A diff ControlNet is a
    build of the file on a base MODEL, so the MODEL's weights (its residency key) are part of the entry's identity;
    a MODEL that is not manager-owned (no stable identity) makes it a direct, unshared load."""
    from model_management.control_files import load_control_model, load_resident_control_model
    from diffusion.handles import ResidentModule
    path = ctx.services.paths.require("controlnet", control_net_name)
    models = getattr(ctx.services, "models", None)
    base = getattr(model, "_unet", None)
    try:
        if models is None or (model is not None and not isinstance(base, ResidentModule)):
            return load_control_model(path, model=model)
        options = () if model is None else (("base", base.key),)
        return load_resident_control_model(models, path, model=model, options=options)
    except (ValueError, ModelFileError) as exc:
        raise ValueError(f"control_net_name: {exc}") from exc


def _is_comfy_style(control_net) -> bool:
    """A pack's ComfyUI-style control (comfy.controlnet.ControlBase protocol): applied the way ComfyUI does."""
    return not callable(getattr(control_net, "compute", None)) and callable(getattr(control_net, "copy", None)) \
        and callable(getattr(control_net, "set_cond_hint", None))


def _check_control_net(control_net) -> None:
    if not callable(getattr(control_net, "compute", None)) and not _is_comfy_style(control_net):
        raise ValueError(f"control_net: expected a CONTROL_NET (from Load ControlNet Model), got "
                         f"{type(control_net).__name__}")


def apply_control(conditionings, control_net, image, strength, start_percent=0.0, end_percent=1.0, vae=None,
                  apply_to_uncond=False):
    """Copies of each CONDITIONING in `conditionings` with the control stacked on. Entries whose previous control
    is the same object share one runtime (so positive and negative batch together through the UNet).
    `apply_to_uncond` marks the control for lending to the negative at sampling time (ComfyUI's
    control_apply_to_uncond, set by Apply ControlNet (OLD))."""
    from diffusion.controlnet.control import ControlRuntime, image_to_hint
    _check_control_net(control_net)
    image_to_hint(image)  # fail early, naming the input, on a bad image
    if start_percent > end_percent:
        raise ValueError(f"start_percent ({start_percent}) is after end_percent ({end_percent}): the ControlNet "
                         f"would never be active")
    runtimes: dict = {}
    out = []
    for conditioning in conditionings:
        applied = []
        for cond, opts in conditioning:
            previous = opts.get("control")
            key = id(previous)
            if key not in runtimes:
                if _is_comfy_style(control_net):
                    runtime = control_net.copy().set_cond_hint(image.movedim(-1, 1), strength,
                                                               (start_percent, end_percent), vae)
                    runtimes[key] = runtime.set_previous_controlnet(previous) or runtime
                else:
                    runtimes[key] = ControlRuntime(control_net, image, strength, start_percent, end_percent, vae,
                                                   previous)
            updated = dict(opts)
            updated["control"] = runtimes[key]
            updated["control_apply_to_uncond"] = bool(apply_to_uncond)
            applied.append([cond, updated])
        out.append(applied)
    return out


@node(category="loaders", display_name="Load ControlNet Model",
      outputs=[Output("CONTROL_NET", tooltip="The loaded control model, for the Apply ControlNet nodes.")])
class ControlNetLoader:
    """Load a ControlNet (single-file SD1/SD2/SDXL or diffusers format), a T2I-adapter or a control-LoRA; the
    format and model family are detected from the weights."""
    control_net_name = Combo(files("controlnet"), tooltip="The ControlNet file (models/controlnet).")

    def run(self, ctx, control_net_name):
        return (_load(ctx, control_net_name),)


@node(category="loaders", display_name="Load ControlNet Model (diff)",
      outputs=[Output("CONTROL_NET", tooltip="The loaded control model, for the Apply ControlNet nodes.")])
class DiffControlNetLoader:
    """Load a ControlNet stored as a difference from a base model: the MODEL's UNet weights are added to it.
    A regular ControlNet file loads here too (the MODEL is then unused)."""
    model = Socket("MODEL", tooltip="The model the diff ControlNet was made against (its weights are added).")
    control_net_name = Combo(files("controlnet"), tooltip="The ControlNet file (models/controlnet).")

    def run(self, ctx, model, control_net_name):
        return (_load(ctx, control_net_name, model=model),)


@node(category="conditioning/controlnet", display_name="Apply ControlNet (OLD)", deprecated=True,
      outputs=[Output(COND, tooltip="The conditioning with the ControlNet attached.")])
class ControlNetApply:
    """Attach a ControlNet and its control image to one conditioning for the whole sampling run (superseded by
    Apply ControlNet, which also takes the negative prompt and a start/end window)."""
    conditioning = Socket(COND, tooltip="The conditioning the ControlNet guides.")
    control_net = Socket("CONTROL_NET", tooltip="The ControlNet to apply.")
    image = Socket("IMAGE", tooltip="The control image (edges, depth, pose...); resized to the latent's size x8.")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01,
                     tooltip="How strongly the ControlNet steers the UNet (its residuals are multiplied by this).")

    def run(self, ctx, conditioning, control_net, image, strength):
        if strength == 0:
            return (conditioning,)
        return tuple(apply_control([conditioning], control_net, image, strength, apply_to_uncond=True))


@node(category="conditioning/controlnet", display_name="Apply ControlNet",
      outputs=[Output(COND, "positive", tooltip="The positive conditioning with the ControlNet attached."),
               Output(COND, "negative", tooltip="The negative conditioning with the ControlNet attached.")])
class ControlNetApplyAdvanced:
    """Attach a ControlNet and its control image to the positive and negative conditioning, active over a part of
    the sampling run. Chain several to stack ControlNets (their residuals add)."""
    positive = Socket(COND, tooltip="The positive conditioning.")
    negative = Socket(COND, tooltip="The negative conditioning.")
    control_net = Socket("CONTROL_NET", tooltip="The ControlNet to apply.")
    image = Socket("IMAGE", tooltip="The control image (edges, depth, pose...); resized to the latent's size x8.")
    strength = Float(1.0, min=0.0, max=10.0, step=0.01,
                     tooltip="How strongly the ControlNet steers the UNet (its residuals are multiplied by this).")
    start_percent = Float(0.0, min=0.0, max=1.0, step=0.001,
                          tooltip="Fraction of the sampling run at which the ControlNet starts acting.")
    end_percent = Float(1.0, min=0.0, max=1.0, step=0.001,
                        tooltip="Fraction of the sampling run after which the ControlNet stops acting.")
    vae = Socket("VAE", optional=True, tooltip="Optional VAE, for control models that take latent hints.")

    def run(self, ctx, positive, negative, control_net, image, strength, start_percent, end_percent, vae=None):
        if strength == 0:
            return (positive, negative)
        pos, neg = apply_control([positive, negative], control_net, image, strength, start_percent, end_percent,
                                 vae)
        return (pos, neg)


NODES = [ControlNetLoader, DiffControlNetLoader, ControlNetApply, ControlNetApplyAdvanced]
