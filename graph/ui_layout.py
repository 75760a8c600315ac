"""API-format prompt -> UI-format workflow (version 0.4), laid out left to right by dependency depth.

The editor opens API-format files through this, and the example workflows in workflows/ are kept as API files
with their UI twins generated from them. `widgets_values` follow the catalogue's widget order, with the extra
values editors store after seed widgets (control_after_generate) and image-upload combos; `graph.ui_format`
reads them back, so `ui_to_api(api_to_ui(p)) == p`.
"""
from __future__ import annotations

from typing import Any, Dict, List

from graph.node_spec import HIDDEN, INT
from graph.prompt import link_parts, unwrap_literal

SEED_NAMES = ("seed", "noise_seed")
COLUMN_WIDTH, ROW_GAP = 380, 40


def _is_widget(spec) -> bool:
    return spec.is_widget and not spec.options.get("forceInput")


def _has_control(spec) -> bool:
    return spec.type == INT and (bool(spec.options.get("control_after_generate")) or spec.name in SEED_NAMES)


def _depths(prompt: dict) -> Dict[str, int]:
    depth: Dict[str, int] = {}

    def visit(node_id: str, trail: frozenset) -> int:
        if node_id in depth:
            return depth[node_id]
        if node_id in trail:
            return 0
        sources = [link_parts(v)[0] for v in prompt[node_id].get("inputs", {}).values()
                   if isinstance(v, list) and link_parts(v) and link_parts(v)[0] in prompt]
        value = 1 + max((visit(s, trail | {node_id}) for s in sources), default=-1)
        depth[node_id] = value
        return value

    for node_id in prompt:
        visit(node_id, frozenset())
    return depth


def api_to_ui(prompt: dict, catalogue: Any, titles: Dict[str, str] = None) -> dict:
    titles = titles or {}
    depths = _depths(prompt)
    ids = {node_id: index + 1 for index, node_id in enumerate(prompt)}
    for node_id in prompt:
        if str(node_id).isdigit():
            ids[node_id] = int(node_id)
    used = set(ids.values())
    if len(used) != len(ids):  # mixed numeric and symbolic ids: renumber everything
        ids = {node_id: index + 1 for index, node_id in enumerate(prompt)}
    rows: Dict[int, int] = {}
    nodes: List[dict] = []
    links: List[list] = []
    outputs: Dict[str, Dict[int, List[int]]] = {}
    for node_id, node in prompt.items():
        spec = catalogue.get(node["class_type"])
        if spec is None:
            raise ValueError(f"unknown node type {node['class_type']!r} (node {node_id})")
        inputs, widgets = [], []
        for ispec in spec.current_inputs():
            if ispec.section == HIDDEN:
                continue
            value = node.get("inputs", {}).get(ispec.name)
            link = link_parts(value) if isinstance(value, list) else None
            if _is_widget(ispec):
                literal = ispec.options.get("default") if link is not None or value is None else unwrap_literal(value)
                widgets.append(literal)
                if _has_control(ispec):
                    widgets.append("fixed")
                if ispec.options.get("image_upload"):
                    widgets.append("image")
            if link is not None or not _is_widget(ispec):
                entry = {"name": ispec.name, "type": str(ispec.type) if not ispec.is_combo else "COMBO",
                         "link": None}
                if _is_widget(ispec):
                    entry["widget"] = {"name": ispec.name}
                if link is not None and link[0] in prompt:
                    link_id = len(links) + 1
                    src_spec = catalogue.get(prompt[link[0]]["class_type"])
                    kind = str(src_spec.outputs[link[1]].type) if src_spec and link[1] < len(src_spec.outputs) \
                        else "*"
                    links.append([link_id, ids[link[0]], link[1], ids[node_id], len(inputs), kind])
                    outputs.setdefault(link[0], {}).setdefault(link[1], []).append(link_id)
                    entry["link"] = link_id
                inputs.append(entry)
        depth = depths[node_id]
        row = rows.get(depth, 0)
        height = 60 + 26 * (len(inputs) + len(widgets) + len(spec.outputs))
        rows[depth] = row + height + ROW_GAP
        node_ui = {"id": ids[node_id], "type": spec.name, "pos": [40 + depth * COLUMN_WIDTH, 40 + row],
                   "size": [320, height], "flags": {}, "order": 0, "mode": 0, "inputs": inputs, "outputs": [],
                   "properties": {"Node name for S&R": spec.name}, "widgets_values": widgets}
        if node_id in titles:
            node_ui["title"] = titles[node_id]
        nodes.append((node_id, node_ui))
    final = []
    order = sorted(prompt, key=lambda n: depths[n])
    for node_id, node_ui in nodes:
        spec = catalogue.get(prompt[node_id]["class_type"])
        node_ui["order"] = order.index(node_id)
        node_ui["outputs"] = [{"name": o.name, "type": str(o.type), "links": outputs.get(node_id, {}).get(i, []),
                               "slot_index": i} for i, o in enumerate(spec.outputs)]
        final.append(node_ui)
    return {"last_node_id": max(ids.values(), default=0), "last_link_id": len(links), "nodes": final,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}
