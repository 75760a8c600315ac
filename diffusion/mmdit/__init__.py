"""SD3 / SD3.5 diffusion transformer (MMDiT): config from weights, the network, diffusers key names."""
