"""`comfy_extras.*`: the modules ComfyUI keeps its extra nodes in, for packs that import built-in nodes (and a
few helpers) from them. Each module resolves class names to our built-in node with that name (compat/comfy_nodes.py,
ComfyUI's method names included); a name we do not have raises ImportError/AttributeError naming it.
"""
