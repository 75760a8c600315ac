"""How packs call built-in nodes by ComfyUI's method names: `nodes.VAEDecode().decode(vae, samples)`.

For each built-in, ComfyUI's FUNCTION name, the V1 names of built-ins ComfyUI has since rewritten as V3 nodes,
the positional order of its method where it differs from the input order (ComfyUI's `decode(self, vae, samples)`
takes the VAE first although the node lists `samples` first), and parameters its method has that are not inputs
here (accepted at their default only). Facts about ComfyUI's API, read from its classes; compat/comfy_nodes.py
applies them to the generated classes.
"""

# ComfyUI's FUNCTION name of each built-in that has one (V1 classes; ComfyUI's V3 built-ins run `execute`):
# packs call it directly (`nodes.VAEDecode().decode(vae, samples)`) and subclasses override it, so the
# generated class's FUNCTION is this name, and `execute` runs the same.
FUNCTION_ALIASES = {
    "BasicGuider": "get_guider", "BasicScheduler": "get_sigmas", "BetaSamplingScheduler": "get_sigmas",
    "CFGGuider": "get_guider", "CLIPLoader": "load_clip", "CLIPMergeSimple": "merge", "CLIPSave": "save",
    "CLIPSetLastLayer": "set_last_layer", "CLIPTextEncode": "encode", "CLIPVisionEncode": "encode",
    "CLIPVisionLoader": "load_clip", "CheckpointLoader": "load_checkpoint",
    "CheckpointLoaderSimple": "load_checkpoint", "CheckpointSave": "save", "ConditioningAverage": "addWeighted",
    "ConditioningCombine": "combine", "ConditioningConcat": "concat", "ConditioningSetArea": "append",
    "ConditioningSetAreaPercentage": "append", "ConditioningSetAreaStrength": "append",
    "ConditioningSetMask": "append", "ConditioningSetTimestepRange": "set_range", "ConditioningZeroOut": "zero_out",
    "ControlNetApply": "apply_controlnet", "ControlNetApplyAdvanced": "apply_controlnet",
    "ControlNetLoader": "load_controlnet", "CropMask": "crop", "DiffControlNetLoader": "load_controlnet",
    "DisableNoise": "get_noise", "DualCFGGuider": "get_guider", "DualCLIPLoader": "load_clip",
    "EmptyImage": "generate", "EmptyLatentImage": "generate", "ExponentialScheduler": "get_sigmas",
    "FeatherMask": "feather", "FlipSigmas": "get_sigmas", "GrowMask": "expand_mask",
    "HypernetworkLoader": "load_hypernetwork", "ImageBatch": "batch", "ImageColorToMask": "image_to_mask",
    "ImageCompositeMasked": "composite", "ImageCrop": "crop", "ImageFromBatch": "frombatch", "ImageInvert": "invert",
    "ImagePadForOutpaint": "expand_image", "ImageScale": "upscale", "ImageScaleBy": "upscale",
    "ImageToMask": "image_to_mask", "InpaintModelConditioning": "encode", "InvertMask": "invert",
    "KSampler": "sample", "KSamplerAdvanced": "sample", "KSamplerSelect": "get_sampler",
    "KarrasScheduler": "get_sigmas", "LatentBlend": "blend", "LatentComposite": "composite",
    "LatentCompositeMasked": "composite", "LatentCrop": "crop", "LatentFlip": "flip", "LatentFromBatch": "frombatch",
    "LatentRotate": "rotate", "LatentUpscale": "upscale", "LatentUpscaleBy": "upscale", "LoadImage": "load_image",
    "LoadImageMask": "load_image", "LoadLatent": "load", "LoraLoader": "load_lora",
    "LoraLoaderModelOnly": "load_lora_model_only", "MaskComposite": "combine", "MaskToImage": "mask_to_image",
    "ModelMergeAdd": "merge", "ModelMergeBlocks": "merge", "ModelMergeSimple": "merge",
    "ModelMergeSubtract": "merge", "ModelSamplingDiscrete": "patch", "PolyexponentialScheduler": "get_sigmas",
    "PreviewAny": "main", "PreviewImage": "save_images", "RepeatImageBatch": "repeat", "RepeatLatentBatch": "repeat",
    "RescaleCFG": "patch", "SDTurboScheduler": "get_sigmas", "SamplerCustom": "sample",
    "SamplerCustomAdvanced": "sample", "SaveImage": "save_images", "SaveImageWebsocket": "save_images",
    "SaveLatent": "save", "SetLatentNoiseMask": "set_mask", "SolidMask": "solid", "SplitSigmas": "get_sigmas",
    "SplitSigmasDenoise": "get_sigmas", "ThresholdMask": "image_to_mask", "UNETLoader": "load_unet",
    "VAEDecode": "decode", "VAEDecodeTiled": "decode", "VAEEncode": "encode", "VAEEncodeForInpaint": "encode",
    "VAEEncodeTiled": "encode", "VAELoader": "load_vae", "VAESave": "save", "unCLIPConditioning": "apply_adm",
}


# Built-ins ComfyUI has since rewritten as V3 nodes (run by `execute`): the V1 method names packs written
# before that still call (`GITSScheduler().get_sigmas(...)`, `DifferentialDiffusion().apply(model)`).
LEGACY_FUNCTION_NAMES = {
    "AlignYourStepsScheduler": "get_sigmas", "CLIPTextEncodeSDXL": "encode", "CLIPTextEncodeSDXLRefiner": "encode",
    "Canny": "detect_edge", "DifferentialDiffusion": "apply", "GITSScheduler": "get_sigmas",
    "ImageBlend": "blend_images", "ImageBlur": "blur", "ImageQuantize": "quantize", "ImageSharpen": "sharpen",
    "ImageUpscaleWithModel": "upscale", "LatentAdd": "op", "LatentBatch": "batch", "LatentInterpolate": "op",
    "LatentMultiply": "op", "LatentSubtract": "op", "PerpNeg": "patch", "PerpNegGuider": "get_guider",
    "RandomNoise": "get_noise", "RebatchImages": "rebatch", "RebatchLatents": "rebatch", "SamplerCustom": "sample",
    "SamplerCustomAdvanced": "sample", "UpscaleModelLoader": "load_model",
}


# Method parameter order where it differs from the node's input order (hidden inputs included where ComfyUI's
# method takes them).
POSITIONAL_ORDER = {
    "CLIPTextEncode": ["clip", "text"],
    "CLIPTextEncodeSDXLRefiner": ["clip", "ascore", "width", "height", "text"],
    "ConditioningSetMask": ["conditioning", "mask", "set_cond_area", "strength"],
    "InpaintModelConditioning": ["positive", "negative", "pixels", "vae", "mask", "noise_mask"],
    "VAEDecode": ["vae", "samples"],
    "VAEDecodeTiled": ["vae", "samples", "tile_size", "overlap", "temporal_size", "temporal_overlap"],
    "VAEEncode": ["vae", "pixels"],
    "VAEEncodeForInpaint": ["vae", "pixels", "mask", "grow_mask_by"],
    "VAEEncodeTiled": ["vae", "pixels", "tile_size", "overlap", "temporal_size", "temporal_overlap"],
    "SaveImage": ["images", "filename_prefix", "prompt", "extra_pnginfo"],
    "PreviewImage": ["images", "filename_prefix", "prompt", "extra_pnginfo"],
    "SaveLatent": ["samples", "filename_prefix", "prompt", "extra_pnginfo"],
    "CheckpointSave": ["model", "clip", "vae", "filename_prefix", "prompt", "extra_pnginfo"],
    "CLIPSave": ["clip", "filename_prefix", "prompt", "extra_pnginfo"],
    "VAESave": ["vae", "filename_prefix", "prompt", "extra_pnginfo"],
}

# Parameters of ComfyUI's methods that are not inputs of ours: accepted when they hold this default.
EXTRA_PARAMETERS = {
    "KSamplerAdvanced": {"denoise": 1.0},
    "LatentComposite": {"composite_method": "normal"},
    "LatentBlend": {"blend_mode": "normal"},
    "ControlNetApplyAdvanced": {"extra_concat": []},
    "PreviewImage": {"filename_prefix": "ComfyUI"},
}
