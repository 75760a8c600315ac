"""`comfy.cldm`: ComfyUI's ControlNet network module path (cldm.py)."""
