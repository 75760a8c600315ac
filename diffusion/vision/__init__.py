"""Image encoders: CLIP vision towers (clip_vision.py)."""
