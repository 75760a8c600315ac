"""The HTTP and websocket API (DESIGN.md §3), split by concept; server.py assembles it."""
