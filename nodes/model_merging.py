"""Model merging and saving nodes (advanced/model_merging).

Merges record patches on a clone of the first input (model_management.merging): nothing is copied when they run,
they compose with LoRAs and with each other, and the blend is computed only while the model is used. The save nodes
bake every patch into the file they write (model_management.saving) and number files like images:
`{prefix}_{counter:05}_.safetensors` in the output folder.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

from nodes.declare import Float, Hidden, Output, Socket, String, node

CATEGORY = "advanced/model_merging"
_RATIO_TIP = "model1's share of each weight: 1.0 keeps model1, 0.0 gives model2, 0.5 an even blend."
_PREFIX_TIP = ("File name prefix inside the output folder; may contain subfolders and %year%, %month%, %day% ... "
               "placeholders. A counter and .safetensors are appended.")


def _reporter(ctx):
    return getattr(ctx, "report_text", None) if ctx is not None else None


def _ratio_input(what: str):
    return Float(1.0, min=0.0, max=1.0, step=0.01, tooltip=what)


@node(category=CATEGORY, display_name="ModelMergeSimple",
      outputs=[Output("MODEL", tooltip="The merged model: ratio * model1 + (1 - ratio) * model2.")])
class ModelMergeSimple:
    """Blend two models of the same family weight by weight: ratio * model1 + (1 - ratio) * model2. LoRAs already
    applied to either model are part of the blend."""
    model1 = Socket("MODEL", tooltip="The first model; the result keeps its settings.")
    model2 = Socket("MODEL", tooltip="The second model, blended in.")
    ratio = _ratio_input(_RATIO_TIP)

    def run(self, ctx, model1, model2, ratio):
        from model_management.merging import merge_simple
        return (merge_simple(model1, model2, ratio, report=_reporter(ctx)),)


@node(category=CATEGORY, display_name="ModelMergeAdd",
      outputs=[Output("MODEL", tooltip="model1 + model2, weight by weight.")])
class ModelMergeAdd:
    """Add model2's weights to model1's (model1 + model2). Typically model2 is a difference made with
    ModelMergeSubtract, e.g. for the 'add difference' recipe."""
    model1 = Socket("MODEL", tooltip="The model to add to; the result keeps its settings.")
    model2 = Socket("MODEL", tooltip="The weights to add (usually a difference from ModelMergeSubtract).")

    def run(self, ctx, model1, model2):
        from model_management.merging import merge_add
        return (merge_add(model1, model2, report=_reporter(ctx)),)


@node(category=CATEGORY, display_name="ModelMergeSubtract",
      outputs=[Output("MODEL", tooltip="multiplier * (model1 - model2), weight by weight.")])
class ModelMergeSubtract:
    """The difference of two models scaled by a multiplier: multiplier * (model1 - model2). Add it to a third model
    with ModelMergeAdd to transfer what model1 learned on top of model2."""
    model1 = Socket("MODEL", tooltip="The model to subtract from (e.g. a fine-tune).")
    model2 = Socket("MODEL", tooltip="The model to subtract (e.g. the base the fine-tune started from).")
    multiplier = Float(1.0, min=-10.0, max=10.0, step=0.01,
                       tooltip="Scales the difference (1.0: model1 - model2; negative values reverse it).")

    def run(self, ctx, model1, model2, multiplier):
        from model_management.merging import merge_subtract
        return (merge_subtract(model1, model2, multiplier, report=_reporter(ctx)),)


@node(category=CATEGORY, display_name="ModelMergeBlocks",
      outputs=[Output("MODEL", tooltip="The merged model, blended per UNet block.")])
class ModelMergeBlocks:
    """Blend two models with a separate ratio for the UNet's input blocks, middle block and output blocks (each is
    model1's share). The time and label embeddings follow the input ratio; the final output layers the out ratio."""
    model1 = Socket("MODEL", tooltip="The first model; the result keeps its settings.")
    model2 = Socket("MODEL", tooltip="The second model, blended in.")
    input = _ratio_input("model1's share in the input (down) blocks, and the time/label embeddings.")
    middle = _ratio_input("model1's share in the middle block.")
    out = _ratio_input("model1's share in the output (up) blocks and the final output layers.")

    def run(self, ctx, model1, model2, input, middle, out):
        from model_management.merging import merge_blocks
        ratios = {"input": input, "middle": middle, "out": out}
        return (merge_blocks(model1, model2, ratios, report=_reporter(ctx)),)


@node(category=CATEGORY, display_name="CLIPMergeSimple",
      outputs=[Output("CLIP", tooltip="The merged text encoder(s).")])
class CLIPMergeSimple:
    """Blend two text encoders of the same family: ratio * clip1 + (1 - ratio) * clip2 (position ids and the logit
    scale are not merged). The result keeps clip1's CLIP-skip and embeddings."""
    clip1 = Socket("CLIP", tooltip="The first text encoder; the result keeps its settings.")
    clip2 = Socket("CLIP", tooltip="The second text encoder, blended in.")
    ratio = _ratio_input("clip1's share of each weight: 1.0 keeps clip1, 0.0 gives clip2.")

    def run(self, ctx, clip1, clip2, ratio):
        from model_management.merging import merge_clip_simple
        return (merge_clip_simple(clip1, clip2, ratio, report=_reporter(ctx)),)


# -- saving --------------------------------------------------------------------------------------------------------

def _target(ctx, filename_prefix: str) -> Dict[str, Any]:
    """The next numbered .safetensors file for a prefix in the output folder."""
    from model_management.paths import PathError
    paths = ctx.services.paths
    try:
        folder, base, counter, subfolder = paths.save_path(filename_prefix, "output")
    except PathError as exc:
        raise ValueError(f"filename_prefix {filename_prefix!r} cannot be used: {exc}; it must name a file inside "
                         f"the output folder") from None
    filename = f"{base}_{counter:05}_.safetensors"
    return {"path": os.path.join(folder, filename),
            "entry": {"filename": filename, "subfolder": subfolder, "type": "output"}}


def _workflow(ctx, prompt, extra_pnginfo) -> Dict[str, str]:
    from model_management.saving import workflow_metadata
    settings = getattr(getattr(ctx, "services", None), "settings", None)
    if settings and settings.get("disable_metadata"):
        return {}
    return workflow_metadata(prompt, extra_pnginfo)


def _saved(entries: List[dict]) -> dict:
    return {"ui": {"files": entries}, "result": ()}


@node(category=CATEGORY, display_name="Save Checkpoint", output_node=True)
class CheckpointSave:
    """Save a model, its text encoder(s) and a VAE as one .safetensors checkpoint in the standard layout of the
    model's family, with LoRAs and merges baked in; the workflow is stored in the file's metadata."""
    model = Socket("MODEL", tooltip="The diffusion model to save (its patches are applied).")
    clip = Socket("CLIP", tooltip="The text encoder(s) to save; must be of the model's family.")
    vae = Socket("VAE", tooltip="The VAE to save.")
    filename_prefix = String("checkpoints/ComfyUI", tooltip=_PREFIX_TIP)
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, model, clip, vae, filename_prefix="checkpoints/ComfyUI", prompt=None, extra_pnginfo=None):
        from model_management.saving import checkpoint_metadata, save_checkpoint
        target = _target(ctx, filename_prefix)
        title = os.path.splitext(target["entry"]["filename"])[0]
        metadata = checkpoint_metadata(model, clip, vae, title)
        metadata.update(_workflow(ctx, prompt, extra_pnginfo))
        save_checkpoint(target["path"], model, clip, vae, metadata)
        return _saved([target["entry"]])


@node(category=CATEGORY, display_name="VAESave", output_node=True)
class VAESave:
    """Save a VAE as a standalone .safetensors file (bare encoder/decoder keys, loadable with Load VAE)."""
    vae = Socket("VAE", tooltip="The VAE to save.")
    filename_prefix = String("vae/ComfyUI_vae", tooltip=_PREFIX_TIP)
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, vae, filename_prefix="vae/ComfyUI_vae", prompt=None, extra_pnginfo=None):
        from model_management.saving import save_vae
        target = _target(ctx, filename_prefix)
        save_vae(target["path"], vae, _workflow(ctx, prompt, extra_pnginfo))
        return _saved([target["entry"]])


@node(category=CATEGORY, display_name="CLIPSave", output_node=True)
class CLIPSave:
    """Save each text encoder of a CLIP as its own .safetensors file in the transformers layout (`text_model.*`),
    named after its role (clip_l, clip_h, clip_g), with LoRAs and merges baked in. Loadable with Load CLIP /
    DualCLIPLoader; CLIP skip is a workflow setting and is not saved."""
    clip = Socket("CLIP", tooltip="The text encoder(s) to save.")
    filename_prefix = String("clip/ComfyUI", tooltip=_PREFIX_TIP + " Each encoder's role is added to the prefix.")
    prompt = Hidden("PROMPT")
    extra_pnginfo = Hidden("EXTRA_PNGINFO")

    def run(self, ctx, clip, filename_prefix="clip/ComfyUI", prompt=None, extra_pnginfo=None):
        import json

        from model_management.saving import sources, text_encoder_states, write_safetensors
        workflow = _workflow(ctx, prompt, extra_pnginfo)
        entries = []
        for role, state in text_encoder_states(clip).items():
            target = _target(ctx, f"{filename_prefix}_{role}")
            metadata = {"format": "pt", "tessera.source": json.dumps(sources(clip)), "tessera.text_encoder": role}
            metadata.update(workflow)
            write_safetensors(target["path"], state, metadata)
            entries.append(target["entry"])
        return _saved(entries)


NODES = [ModelMergeSimple, ModelMergeAdd, ModelMergeSubtract, ModelMergeBlocks, CLIPMergeSimple, CheckpointSave,
         VAESave, CLIPSave]
