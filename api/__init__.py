"""The HTTP and websocket API (docs/architecture.md §4.1), split by concept; server.py assembles it."""
