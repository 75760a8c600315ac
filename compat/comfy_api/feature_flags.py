"""`comfy_api.feature_flags`: what a connected client announced it supports (its first `feature_flags` websocket
message) and what this server offers, as packs ask before choosing a message form."""
from __future__ import annotations

from typing import Any, Optional


def get_connection_feature(sockets_metadata: dict, sid: Optional[str], feature_name: str,
                           default: Any = False) -> Any:
    """The value client `sid` announced for `feature_name` (`default` when it did not, or is unknown)."""
    if sid is None or sid not in (sockets_metadata or {}):
        return default
    return sockets_metadata[sid].get("feature_flags", {}).get(feature_name, default)


def supports_feature(sockets_metadata: dict, sid: Optional[str], feature_name: str) -> bool:
    return get_connection_feature(sockets_metadata, sid, feature_name, False) is True


def get_server_features() -> dict:
    """What the running server announces to clients (empty outside a server)."""
    from compat.prompt_server import PromptServer  # noqa: PLC0415
    state = getattr(PromptServer.instance, "_state", None)
    return dict(getattr(getattr(state, "hub", None), "server_features", None) or {})
