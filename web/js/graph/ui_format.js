// Load and save the UI workflow format of docs/architecture.md §4.2 (the format ComfyUI-compatible editors save and embed in
// PNGs). Reads versions 0.4 (links as arrays) and 1.0 (links as objects, subgraph definitions); saves 0.4 with the
// definitions kept as loaded. API-format prompts are turned into a UI layout first (left to right by dependency
// depth, like graph/ui_layout.py).

import { PRIMITIVE } from "./catalogue.js";
import { makeSubgraphInstance, subgraphDefs } from "./subgraphs.js";

const NODE_KEYS = new Set(["id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "title",
  "properties", "widgets_values"]);

export function isUiWorkflow(data) {
  return !!data && typeof data === "object" && Array.isArray(data.nodes) && Array.isArray(data.links);
}

/** True for an API prompt: a non-empty map of node id → {class_type, inputs}. */
export function isApiPrompt(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return false;
  const values = Object.values(data);
  return values.length > 0 && values.every((v) => v && typeof v === "object" && typeof v.class_type === "string");
}

function parseLink(entry) {
  if (Array.isArray(entry)) {
    const [id, origin_id, origin_slot, target_id, target_slot, type] = entry;
    return { id, origin_id, origin_slot, target_id, target_slot, type };
  }
  if (entry && typeof entry === "object") return { ...entry };
  throw new Error(`invalid link entry ${JSON.stringify(entry)}`);
}

function pair(v, fallback) {
  if (Array.isArray(v) && v.length >= 2) return [Number(v[0]) || 0, Number(v[1]) || 0];
  if (v && typeof v === "object" && "0" in v) return [Number(v[0]) || 0, Number(v[1]) || 0];
  return fallback;
}

/** Replace the contents of `graph` with the UI workflow `data`. Throws Error with a message on malformed input. */
export function loadUiWorkflow(graph, data) {
  if (!isUiWorkflow(data)) throw new Error("not a UI workflow: it needs 'nodes' and 'links' lists");
  graph.clear(true);
  graph.extra = data.extra && typeof data.extra === "object" ? { ...data.extra } : {};
  if (data.definitions) graph.extra.definitions = data.definitions; // subgraphs: kept, not edited here
  mergeUiNodes(graph, data.nodes, data.links);
  graph.groups = (Array.isArray(data.groups) ? data.groups : []).map((g) => ({
    ...g, title: g.title ?? "Group", bounding: Array.isArray(g.bounding) ? g.bounding.slice(0, 4).map(Number) : [0, 0, 300, 200],
  }));
  graph.config = data.config && typeof data.config === "object" ? { ...data.config } : {};
  const state = data.state || {};
  graph.lastNodeId = Math.max(graph.lastNodeId, Number(data.last_node_id ?? state.lastNodeId) || 0);
  graph.lastLinkId = Math.max(graph.lastLinkId, Number(data.last_link_id ?? state.lastLinkId) || 0);
}

/** Add saved nodes and the links among them to `graph`. With `offset` ([dx, dy], for paste) every node and link
 * gets a fresh id and is moved by the offset; links to nodes outside the set are kept only when `keepOutside`.
 * Returns the map saved id (as a string) → new node. */
export function mergeUiNodes(graph, nodesData, linksData, offset = null, keepOutside = false) {
  const fresh = offset != null;
  const created = new Map();
  const slotNames = new Map(); // node id → file input index → our input name
  const primitives = [];
  const subgraphs = subgraphDefs(graph); // instances of the graph's subgraphs are drawn from their definitions
  for (const [index, raw] of nodesData.entries()) {
    if (!raw || typeof raw !== "object" || raw.id == null || typeof raw.type !== "string") {
      throw new Error(`nodes[${index}] has no valid id or type`);
    }
    if (!fresh && graph.getNode(raw.id)) throw new Error(`node id ${raw.id} is used by more than one node`);
    const pos = pair(raw.pos, [0, 0]);
    const node = graph.addNode(raw.type, fresh ? [pos[0] + offset[0], pos[1] + offset[1]] : pos, fresh ? null : raw.id);
    created.set(String(raw.id), node);
    const subgraph = node.def ? null : subgraphs.get(raw.type);
    if (subgraph) {
      makeSubgraphInstance(node, subgraph);
      graph._emit("node-changed", node); // a paste draws nodes as they are added: redraw with the sockets
    }
    node.size = pair(raw.size, node.size);
    if (typeof raw.mode === "number") node.mode = raw.mode;
    if (raw.flags && typeof raw.flags === "object") node.flags = { ...raw.flags };
    if (typeof raw.order === "number") node.order = raw.order;
    if (typeof raw.title === "string") node.title = raw.title;
    if (raw.properties && typeof raw.properties === "object") node.properties = { ...raw.properties };
    for (const [k, v] of Object.entries(raw)) if (!NODE_KEYS.has(k)) node.extra[k] = v;
    const names = [];
    const fileInputs = Array.isArray(raw.inputs) ? raw.inputs : [];
    if (!node.def) {
      node.inputs = fileInputs.map((i) => ({ ...i, link: null }));
      node.outputs = (raw.outputs || []).map((o) => ({ ...o, links: [] }));
      fileInputs.forEach((i) => names.push(i.name));
    } else {
      for (const fi of fileInputs) {
        const wname = fi && fi.widget && fi.widget.name;
        if (wname && node.widget(wname)) {
          if (fi.link != null) graph.convertWidgetToInput(node.id, wname);
          names.push(wname);
        } else if (fi && node.input(fi.name)) {
          names.push(fi.name);
        } else if (fi && typeof fi.name === "string") {
          node.inputs.push({ name: fi.name, type: fi.type ?? "*", link: null });
          names.push(fi.name);
        } else {
          names.push(null);
        }
      }
      const fileOutputs = Array.isArray(raw.outputs) ? raw.outputs : [];
      for (let i = node.outputs.length; i < fileOutputs.length; i++) {
        node.outputs.push({ name: fileOutputs[i].name ?? "", type: fileOutputs[i].type ?? "*", links: [] });
      }
      if (node.type === "Reroute" && fileOutputs[0]?.type) node.outputs[0].type = fileOutputs[0].type;
    }
    slotNames.set(String(raw.id), names);
    if (node.type === PRIMITIVE) primitives.push([node, raw.widgets_values]);
    else if (subgraph) node.rawWidgetValues = raw.widgets_values ?? []; // promoted widgets: kept as saved
    else node.setWidgetValues(raw.widgets_values);
  }
  for (const entry of linksData || []) {
    if (entry == null) continue;
    const link = parseLink(entry);
    const names = slotNames.get(String(link.target_id));
    const target = created.get(String(link.target_id));
    const name = names ? names[link.target_slot] : null;
    const origin = created.get(String(link.origin_id)) || (keepOutside ? graph.getNode(link.origin_id) : null);
    if (!target || name == null || !origin) continue; // dangling: other editors drop these too
    graph.connect(origin.id, link.origin_slot, target.id, name, fresh ? null : link.id, true);
  }
  for (const [node, values] of primitives) {
    const first = graph.links.get(node.outputs[0]?.links?.[0]);
    const target = first && graph.getNode(first.target_id);
    const input = target?.inputs[first.target_slot];
    if (input?.widget) graph.configurePrimitive(node, target, input.widget.name);
    node.setWidgetValues(values);
  }
  return created;
}

/** Execution order for the `order` field: sources first. */
function topoOrder(graph) {
  const order = new Map();
  const visiting = new Set();
  const visit = (node) => {
    if (order.has(node.id)) return order.get(node.id);
    if (visiting.has(node.id)) return 0;
    visiting.add(node.id);
    let depth = 0;
    for (const input of node.inputs) {
      const link = input.link != null ? graph.links.get(input.link) : null;
      const src = link && graph.getNode(link.origin_id);
      if (src) depth = Math.max(depth, visit(src) + 1);
    }
    order.set(node.id, depth);
    return depth;
  };
  for (const node of graph.nodes.values()) visit(node);
  const sorted = [...graph.nodes.values()].sort((a, b) => order.get(a.id) - order.get(b.id));
  return new Map(sorted.map((n, i) => [n.id, i]));
}

/** The UI workflow (version 0.4) for `graph`. */
export function serializeGraph(graph) {
  const order = topoOrder(graph);
  const nodes = [];
  for (const node of graph.nodes.values()) {
    const out = {
      id: node.id, type: node.type, pos: [...node.pos], size: [...node.size], flags: { ...node.flags },
      order: order.get(node.id), mode: node.mode,
      inputs: node.inputs.map((i) => {
        const entry = { ...i, link: i.link ?? null };
        if (i.widget) entry.widget = { name: i.widget.name };
        return entry;
      }),
      outputs: node.outputs.map((o, index) => ({ ...o, links: [...(o.links || [])], slot_index: index })),
      properties: { ...node.properties },
      widgets_values: structuredClone(node.widgets_values ?? []),
      ...node.extra,
    };
    if (!node.def || node.title !== node.def.displayName) out.title = node.title;
    nodes.push(out);
  }
  const links = [...graph.links.values()].map((l) => [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot, l.type]);
  const extra = { ...graph.extra };
  const definitions = extra.definitions;
  delete extra.definitions;
  const result = {
    last_node_id: graph.lastNodeId, last_link_id: graph.lastLinkId, nodes, links,
    groups: graph.groups.map((g) => ({ ...g, bounding: [...g.bounding] })),
    config: { ...graph.config }, extra, version: 0.4,
  };
  if (definitions) result.definitions = definitions;
  return result;
}

function linkParts(value) {
  if (Array.isArray(value) && value.length === 2 && (typeof value[0] === "string" || typeof value[0] === "number")
    && Number.isInteger(value[1])) return [String(value[0]), value[1]];
  return null;
}

function unwrap(value) {
  return value && typeof value === "object" && !Array.isArray(value) && "__value__" in value ? value.__value__ : value;
}

/** A UI workflow laid out from an API prompt (the inverse of API export; control values saved as "fixed"). */
export function apiToUi(prompt, catalogue) {
  const ids = Object.keys(prompt);
  const numeric = ids.every((id) => /^\d+$/.test(id));
  const uiId = new Map(ids.map((id, i) => [id, numeric ? Number(id) : i + 1]));
  const depth = new Map();
  const visit = (id, trail) => {
    if (depth.has(id)) return depth.get(id);
    if (trail.has(id)) return 0;
    trail.add(id);
    let d = 0;
    for (const v of Object.values(prompt[id].inputs || {})) {
      const l = linkParts(v);
      if (l && l[0] in prompt) d = Math.max(d, visit(l[0], trail) + 1);
    }
    trail.delete(id);
    depth.set(id, d);
    return d;
  };
  ids.forEach((id) => visit(id, new Set()));
  const rows = new Map();
  const nodes = [], links = [];
  for (const id of ids) {
    const entry = prompt[id];
    const def = catalogue.def(entry.class_type);
    const given = entry.inputs || {};
    const inputs = [], widgets = [];
    const specs = def ? def.inputs : Object.keys(given).map((name) => ({ name, type: "*", isWidget: false }));
    for (const spec of specs) {
      const value = given[spec.name];
      const link = linkParts(value);
      if (spec.isWidget) {
        widgets.push(link || value === undefined ? (spec.options?.default ?? null) : unwrap(value));
        if (spec.control) widgets.push("fixed");
        if (spec.upload) widgets.push("image");
      }
      if (!spec.isWidget || link) {
        const slot = { name: spec.name, type: spec.type, link: null };
        if (spec.isWidget) slot.widget = { name: spec.name };
        if (link && link[0] in prompt) {
          const src = catalogue.def(prompt[link[0]].class_type);
          const linkId = links.length + 1;
          links.push([linkId, uiId.get(link[0]), link[1], uiId.get(id), inputs.length, src?.outputs[link[1]]?.type ?? "*"]);
          slot.link = linkId;
        }
        inputs.push(slot);
      }
    }
    const d = depth.get(id);
    const y = rows.get(d) || 0;
    const height = 60 + 26 * (inputs.length + widgets.length + (def ? def.outputs.length : 0));
    rows.set(d, y + height + 40);
    const node = { id: uiId.get(id), type: entry.class_type, pos: [40 + d * 380, 40 + y], size: [320, height],
      flags: {}, order: 0, mode: 0, inputs, outputs: [], properties: {}, widgets_values: widgets };
    if (entry._meta?.title) node.title = entry._meta.title;
    nodes.push(node);
  }
  return { last_node_id: Math.max(0, ...uiId.values()), last_link_id: links.length, nodes, links, groups: [],
    config: {}, extra: {}, version: 0.4 };
}
