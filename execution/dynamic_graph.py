"""One job's graph: the validated prompt plus the nodes that expansion adds while the job runs.

An added node records the node whose expansion created it (its parent) and the node the user sees it as (its
display node), so events and errors point at something that exists in the editor. Both form chains when an added
node expands again; the lookups follow a chain to its end. `DynamicPrompt` is the name and method set V1 packs
receive as the DYNPROMPT hidden input.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional


class NodeNotFoundError(KeyError):
    """A node id that is neither in the prompt nor added by an expansion."""


@dataclass(frozen=True)
class AddedNode:
    definition: dict  # {"class_type", "inputs"}
    parent: str       # the node whose expansion added it
    display: str      # the node it is reported as


class DynamicPrompt:
    def __init__(self, original_prompt: Mapping[str, dict]) -> None:
        self.original_prompt = original_prompt
        self._added: Dict[str, AddedNode] = {}

    # -- lookups ------------------------------------------------------------------------------------------------
    def get_node(self, node_id: str) -> dict:
        """The node's definition ({"class_type", "inputs"}), prompt or added."""
        added = self._added.get(node_id)
        if added is not None:
            return added.definition
        try:
            return self.original_prompt[node_id]
        except KeyError:
            raise NodeNotFoundError(f"node {node_id} not found") from None

    def has_node(self, node_id: str) -> bool:
        return node_id in self._added or node_id in self.original_prompt

    def all_node_ids(self) -> set:
        return {*self.original_prompt, *self._added}

    def get_original_prompt(self) -> Mapping[str, dict]:
        return self.original_prompt

    # -- expansion ----------------------------------------------------------------------------------------------
    def add_ephemeral_node(self, node_id: str, node_info: dict, parent_id: str, display_id: str) -> None:
        self._added[node_id] = AddedNode(node_info, parent_id, display_id)

    @property
    def ephemeral_prompt(self) -> Dict[str, dict]:
        """The added nodes' definitions, by id."""
        return {node_id: added.definition for node_id, added in self._added.items()}

    def get_parent_node_id(self, node_id: str) -> Optional[str]:
        added = self._added.get(node_id)
        return added.parent if added is not None else None

    def _chain_end(self, node_id: str, step: str) -> str:
        """Follow parent or display links to a prompt node (an added node always points at an older node)."""
        added = self._added.get(node_id)
        while added is not None:
            node_id = getattr(added, step)
            added = self._added.get(node_id)
        return node_id

    def get_real_node_id(self, node_id: str) -> str:
        """The prompt node whose (possibly nested) expansion produced `node_id`; itself for prompt nodes."""
        return self._chain_end(node_id, "parent")

    def get_display_node_id(self, node_id: str) -> str:
        """The node the user sees `node_id` as."""
        return self._chain_end(node_id, "display")
