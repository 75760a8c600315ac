"""`comfy_api`: the versioned node API -- `latest` (the V3 node schema `io` / `ui`, ComfyExtension, ComfyAPI /
ComfyAPISync) and `v0_0_2`, the same objects under a pinned version name."""
