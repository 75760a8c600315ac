"""Prompt encoding nodes: text to CONDITIONING with a CLIP, SDXL's size conditioning, and CLIP skip.

Prompts support `(word:1.2)` / `(word)` emphasis, `\\(` escapes, any length (77-token windows), and
`embedding:name` textual inversions from models/embeddings. A missing embedding is reported on the node (log and
`progress_text`) and the prompt is encoded without it, as in the reference.
"""
from __future__ import annotations

import logging

from nodes.declare import MAX_RESOLUTION, Combo, Float, Int, Output, Socket, String, node

log = logging.getLogger(__name__)
COND = "CONDITIONING"
_TEXT_TIP = "The prompt. (word:1.2) weights a word, embedding:name inserts a textual inversion."


def encode(ctx, clip, text: str, text_l=None) -> tuple:
    """(cond, pooled); each warning of the tokenizer (a missing embedding) is shown on the node."""
    if clip is None:
        raise ValueError("the clip input is empty: the checkpoint has no text encoder; load one with Load CLIP")
    cond, pooled, warnings = clip.encode(text, text_l=text_l)
    report_warnings(ctx, warnings)
    return cond, pooled


def report_warnings(ctx, warnings) -> None:
    """Each tokenizer warning once, in order, on the node (or the log without a node context)."""
    for warning in dict.fromkeys(warnings):
        if ctx is not None:
            ctx.report_text(warning)
        else:
            log.warning(warning)


@node(category="conditioning", display_name="CLIP Text Encode (Prompt)",
      outputs=[Output(COND, tooltip="The encoded prompt, to guide the sampler.")])
class CLIPTextEncode:
    """Encode a text prompt with a CLIP model into conditioning for the sampler."""
    text = String("", multiline=True, dynamicPrompts=True, tooltip=_TEXT_TIP)
    clip = Socket("CLIP", tooltip="The text encoder (from the checkpoint loader).")

    def run(self, ctx, text, clip):
        cond, pooled = encode(ctx, clip, text)
        return ([[cond, {"pooled_output": pooled}]],)


@node(category="advanced/conditioning", display_name="CLIPTextEncodeSDXL",
      outputs=[Output(COND, tooltip="The encoded prompts with SDXL's size conditioning.")])
class CLIPTextEncodeSDXL:
    """Encode prompts for SDXL: a prompt for each text encoder plus the size and crop the model conditions on."""
    clip = Socket("CLIP", tooltip="SDXL's text encoders.")
    width = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="The original image width the model should assume.")
    height = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="The original image height the model should assume.")
    crop_w = Int(0, min=0, max=MAX_RESOLUTION, tooltip="Horizontal crop offset to condition on (0: uncropped).")
    crop_h = Int(0, min=0, max=MAX_RESOLUTION, tooltip="Vertical crop offset to condition on (0: uncropped).")
    target_width = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="The target width to condition on.")
    target_height = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="The target height to condition on.")
    text_g = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the OpenCLIP-bigG encoder.")
    text_l = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the CLIP-L encoder.")

    def run(self, ctx, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        cond, pooled = encode(ctx, clip, text_g, text_l=text_l)
        return ([[cond, {"pooled_output": pooled, "width": width, "height": height, "crop_w": crop_w,
                         "crop_h": crop_h, "target_width": target_width, "target_height": target_height}]],)


@node(category="advanced/conditioning", display_name="CLIPTextEncodeSDXLRefiner",
      outputs=[Output(COND, tooltip="The encoded prompt with the refiner's aesthetic-score conditioning.")])
class CLIPTextEncodeSDXLRefiner:
    """Encode a prompt for the SDXL refiner, with the aesthetic score it conditions on."""
    ascore = Float(6.0, min=0.0, max=1000.0, step=0.01,
                   tooltip="Aesthetic score to condition on (about 6 for the positive, 2.5 for the negative).")
    width = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="Image width to condition on.")
    height = Int(1024, min=0, max=MAX_RESOLUTION, tooltip="Image height to condition on.")
    text = String("", multiline=True, dynamicPrompts=True, tooltip=_TEXT_TIP)
    clip = Socket("CLIP", tooltip="The refiner's text encoder.")

    def run(self, ctx, ascore, width, height, text, clip):
        cond, pooled = encode(ctx, clip, text)
        return ([[cond, {"pooled_output": pooled, "aesthetic_score": ascore, "width": width, "height": height}]],)


@node(category="advanced/conditioning", display_name="CLIPTextEncodeSD3",
      outputs=[Output(COND, tooltip="The encoded prompts for an SD3 model.")])
class CLIPTextEncodeSD3:
    """Encode a prompt for each of SD3's text encoders (CLIP-L, CLIP-G, T5-XXL). With empty_padding none, an
    empty prompt leaves its encoder out (SD3 was trained to take missing encoders); empty_prompt encodes it as the
    empty prompt instead."""
    clip = Socket("CLIP", tooltip="SD3's text encoders (TripleCLIPLoader or the checkpoint's).")
    clip_l = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the CLIP-L encoder.")
    clip_g = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the CLIP-G (OpenCLIP bigG) encoder.")
    t5xxl = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the T5-XXL encoder.")
    empty_padding = Combo(["none", "empty_prompt"],
                          tooltip="none: an empty prompt leaves its encoder out; empty_prompt: encode it as \"\".")

    def run(self, ctx, clip, clip_l, clip_g, t5xxl, empty_padding):
        if clip is None:
            raise ValueError("the clip input is empty: the checkpoint has no text encoder; load one with "
                             "TripleCLIPLoader")
        stack, warnings = clip.stack, []
        no_padding = empty_padding == "none"
        windows = dict(stack.tokenize(clip_g, warnings))
        if not clip_g and no_padding:
            windows["clip_g"] = []
        windows["clip_l"] = [] if not clip_l and no_padding else stack.tokenize(clip_l, warnings).get("clip_l", [])
        windows["t5xxl"] = [] if not t5xxl and no_padding else stack.tokenize(t5xxl, warnings).get("t5xxl", [])
        if "clip_l" in stack.roles and "clip_g" in stack.roles and len(windows["clip_l"]) != len(windows["clip_g"]):
            empty = stack.tokenize("")
            while len(windows["clip_l"]) < len(windows["clip_g"]):
                windows["clip_l"] = windows["clip_l"] + empty["clip_l"]
            while len(windows["clip_l"]) > len(windows["clip_g"]):
                windows["clip_g"] = windows["clip_g"] + empty["clip_g"]
        windows = {role: w for role, w in windows.items() if role in stack.roles}
        cond, pooled = clip.encode_windows(windows, warnings)
        report_warnings(ctx, warnings)
        return ([[cond, {"pooled_output": pooled}]],)


@node(category="advanced/conditioning/flux", display_name="CLIPTextEncodeFlux",
      outputs=[Output(COND, tooltip="The encoded prompts with the distilled guidance.")])
class CLIPTextEncodeFlux:
    """Encode a prompt for each of Flux's text encoders: CLIP-L gives the pooled vector, T5-XXL the tokens the
    model attends to; with the distilled guidance a Flux-dev model is conditioned on."""
    clip = Socket("CLIP", tooltip="Flux's text encoders (DualCLIPLoader type flux, or the checkpoint's).")
    clip_l = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the CLIP-L encoder.")
    t5xxl = String("", multiline=True, dynamicPrompts=True, tooltip="Prompt for the T5-XXL encoder.")
    guidance = Float(3.5, min=0.0, max=100.0, step=0.1, tooltip="The distilled guidance (Flux-dev: 3.5 typical).")

    def run(self, ctx, clip, clip_l, t5xxl, guidance):
        if clip is None:
            raise ValueError("the clip input is empty: the checkpoint has no text encoder; load one with "
                             "DualCLIPLoader (type flux)")
        stack, warnings = clip.stack, []
        windows = {"clip_l": stack.tokenize(clip_l, warnings).get("clip_l", []),
                   "t5xxl": stack.tokenize(t5xxl, warnings).get("t5xxl", [])}
        windows = {role: w for role, w in windows.items() if role in stack.roles}
        cond, pooled = clip.encode_windows(windows, warnings)
        report_warnings(ctx, warnings)
        return ([[cond, {"pooled_output": pooled, "guidance": guidance}]],)


@node(category="conditioning", display_name="CLIP Set Last Layer",
      outputs=[Output("CLIP", tooltip="The same text encoder, stopping at the chosen layer.")])
class CLIPSetLastLayer:
    """Use an earlier layer of the text encoder ("CLIP skip"): -1 is the last layer, -2 the one before."""
    clip = Socket("CLIP", tooltip="The text encoder.")
    stop_at_clip_layer = Int(-1, min=-24, max=-1, step=1, tooltip="Which layer's output to use, from the end.")

    def run(self, ctx, clip, stop_at_clip_layer):
        return (clip.with_clip_skip(stop_at_clip_layer),)


NODES = [CLIPTextEncode, CLIPTextEncodeSDXL, CLIPTextEncodeSDXLRefiner, CLIPTextEncodeSD3, CLIPTextEncodeFlux,
         CLIPSetLastLayer]
