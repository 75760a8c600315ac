"""One job's graph: the validated prompt plus the ephemeral nodes that expansion adds while it runs.

Ephemeral nodes remember the node that created them (parent) and the node the user sees them as (display node), so
events and errors point at something that exists in the editor. The method names follow the DYNPROMPT object that
V1 node packs receive as a hidden input.
"""
from __future__ import annotations

from typing import Dict, Optional


class DynamicPrompt:
    def __init__(self, original_prompt: dict) -> None:
        self.original_prompt = original_prompt
        self.ephemeral_prompt: Dict[str, dict] = {}
        self.ephemeral_parents: Dict[str, str] = {}
        self.ephemeral_display: Dict[str, str] = {}

    def get_node(self, node_id: str) -> dict:
        node = self.ephemeral_prompt.get(node_id)
        if node is None:
            node = self.original_prompt.get(node_id)
            if node is None:
                raise KeyError(f"node {node_id} not found")
        return node

    def has_node(self, node_id: str) -> bool:
        return node_id in self.ephemeral_prompt or node_id in self.original_prompt

    def add_ephemeral_node(self, node_id: str, node_info: dict, parent_id: str, display_id: str) -> None:
        self.ephemeral_prompt[node_id] = node_info
        self.ephemeral_parents[node_id] = parent_id
        self.ephemeral_display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_parents:
            node_id = self.ephemeral_parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> Optional[str]:
        return self.ephemeral_parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self.ephemeral_display:
            node_id = self.ephemeral_display[node_id]
        return node_id

    def all_node_ids(self) -> set:
        return set(self.original_prompt) | set(self.ephemeral_prompt)

    def get_original_prompt(self) -> dict:
        return self.original_prompt
