"""`comfy_extras.nodes_gits`: GITSScheduler and its helpers (nodes/gits.py); other names resolve to built-in nodes."""
from comfy_extras._lookup import node_class as __getattr__  # noqa: F401
from nodes.gits import gits_sigmas, loglinear_interp, noise_levels  # noqa: F401
