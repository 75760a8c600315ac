"""LoRA nodes: record a LoRA's patches on clones of MODEL and CLIP; they are applied while the model is used and
undone bit-exact afterwards, so the loaded weights stay clean and shared."""
from __future__ import annotations

from nodes.declare import Combo, Float, Output, Socket, node
from nodes.loaders import files

_STRENGTH_TIP = "How strongly to apply it (0: not at all, negative: the opposite direction)."


def _unique_names(module) -> list:
    return [name for name, _ in module.named_parameters()]


def load_lora(ctx, model, clip, lora_name: str, strength_model: float, strength_clip: float) -> tuple:
    from model_management.lora_formats import read_lora
    path = ctx.services.paths.require("loras", lora_name)
    family = model.family.name if model is not None else clip.family_name
    unet_names = _unique_names(model.unet) if model is not None else []
    text_names = _unique_names(clip.stack) if clip is not None else []
    lora = read_lora(path, unet_names, text_names, family)
    if len(lora) == 0:
        raise ValueError(f"{lora_name}: no key of this LoRA matches the {family} model "
                         f"({len(lora.unmatched)} unmatched keys); is it for another model family?")
    if lora.unmatched:
        shown = ", ".join(lora.unmatched[:5])
        ctx.report_text(f"{lora_name}: {len(lora.unmatched)} key(s) not applied: {shown}"
                        + (f" ({lora.problems[0]})" if lora.problems else ""))
    new_model = model.with_patches(lora.unet_patches(strength_model)) if model is not None else None
    new_clip = clip.with_patches(lora.text_patches(strength_clip)) if clip is not None else None
    return new_model, new_clip


@node(category="loaders", display_name="Load LoRA",
      outputs=[Output("MODEL", tooltip="The model with the LoRA."), Output("CLIP", tooltip="The CLIP with the LoRA.")])
class LoraLoader:
    """Apply a LoRA (kohya, diffusers/PEFT, LoHa, LoKr or full-diff) to a model and its text encoder."""
    model = Socket("MODEL", tooltip="The model to apply the LoRA to.")
    clip = Socket("CLIP", tooltip="The text encoder to apply the LoRA to.")
    lora_name = Combo(files("loras"), tooltip="The LoRA file (models/loras).")
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01, tooltip=_STRENGTH_TIP)
    strength_clip = Float(1.0, min=-100.0, max=100.0, step=0.01, tooltip=_STRENGTH_TIP)

    def run(self, ctx, model, clip, lora_name, strength_model, strength_clip):
        return load_lora(ctx, model, clip, lora_name, strength_model, strength_clip)


@node(category="loaders", display_name="LoraLoaderModelOnly",
      outputs=[Output("MODEL", tooltip="The model with the LoRA.")])
class LoraLoaderModelOnly:
    """Apply a LoRA to the model only (its text-encoder part, if any, is not used)."""
    model = Socket("MODEL", tooltip="The model to apply the LoRA to.")
    lora_name = Combo(files("loras"), tooltip="The LoRA file (models/loras).")
    strength_model = Float(1.0, min=-100.0, max=100.0, step=0.01, tooltip=_STRENGTH_TIP)

    def run(self, ctx, model, lora_name, strength_model):
        return (load_lora(ctx, model, None, lora_name, strength_model, 0.0)[0],)


NODES = [LoraLoader, LoraLoaderModelOnly]
