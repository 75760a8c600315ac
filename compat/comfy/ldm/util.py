"""`comfy.ldm.util`: small helpers."""


def exists(value) -> bool:
    return value is not None


def default(value, fallback):
    return value if value is not None else (fallback() if callable(fallback) else fallback)
