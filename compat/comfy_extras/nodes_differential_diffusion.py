"""`comfy_extras.nodes_differential_diffusion`: built-in nodes by their ComfyUI class names (see comfy_extras/__init__.py)."""
from comfy_extras._lookup import node_class as __getattr__  # noqa: F401
