"""`comfy_extras.nodes_perpneg`: the Perp-Neg guider class packs subclass and the formula (nodes/perp_neg.py);
node classes (PerpNeg, PerpNegGuider) resolve to the built-in nodes by name."""
from comfy_extras._lookup import node_class as __getattr__  # noqa: F401
from nodes.perp_neg import Guider_PerpNeg, perp_neg  # noqa: F401
