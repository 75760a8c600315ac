"""`import comfy`: the subset of ComfyUI's `comfy` package that node packs use for utilities (utils,
model_management, comfy_types). The diffusion internals (comfy.sd, comfy.samplers, ...) are not provided here."""
