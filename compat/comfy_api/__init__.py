"""`comfy_api`: the versioned node API. Only `comfy_api.latest`'s ComfyAPI / ComfyAPISync (progress) is
provided; the V3 node schema (`io`, `ui`, ComfyExtension) is not."""
