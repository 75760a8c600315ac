"""`comfy_extras.chainner_models`: ComfyUI's deprecated upscale-model loading module, kept for packs that import it."""
