"""Flux.1 (dev and schnell): the double/single-stream rectified-flow transformer, in the original (BFL) key layout."""
