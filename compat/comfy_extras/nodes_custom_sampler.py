"""`comfy_extras.nodes_custom_sampler`: the custom-sampling nodes, and the NOISE classes packs build directly."""
from comfy_extras._lookup import node_class as __getattr__  # noqa: F401
from nodes.sampling_objects import NoNoise as Noise_EmptyNoise  # noqa: F401
from nodes.sampling_objects import RandomNoiseSource as Noise_RandomNoise  # noqa: F401
