// Subgraphs of UI format 1.0 (`definitions.subgraphs`): reading the definitions, drawing an instance node as an
// ordinary node whose sockets are the definition's inputs and outputs, and mapping the flattened ids the server
// reports ("<instance>:<inner>") back to the instance on the canvas. Editing inside a subgraph is not offered; the
// definitions are kept as loaded and saved back unchanged. Flattening for export lives in api_export.js.

import { NodeDef } from "./catalogue.js";

export const SUBGRAPH_INPUT_NODE = -10;   // pseudo-node inside a definition: its output slots are the inputs
export const SUBGRAPH_OUTPUT_NODE = -20;  // pseudo-node inside a definition: its input slots are the outputs

/** Subgraph definitions by id: those under `definitions.subgraphs`, and any nested inside a definition (the
 * format hoists them to the root, but nested ones are read too, as graph/ui_format.py does). */
export function subgraphDefinitions(workflow) {
  const found = new Map();
  const pending = [workflow];
  while (pending.length) {
    const holder = pending.pop();
    const list = holder && typeof holder === "object" ? holder.definitions?.subgraphs : null;
    if (!Array.isArray(list)) continue;
    for (const sub of list) {
      if (!sub || typeof sub !== "object" || typeof sub.id !== "string" || !sub.id || found.has(sub.id)) continue;
      found.set(sub.id, sub);
      pending.push(sub);
    }
  }
  return found;
}

/** A catalogue-style NodeDef for instances of `sub`: one socket per subgraph input (never a widget, whatever its
 * type), one output per subgraph output, named after the subgraph. */
export function subgraphNodeDef(sub) {
  const required = {};
  const order = [];
  for (const input of Array.isArray(sub.inputs) ? sub.inputs : []) {
    const name = typeof input?.name === "string" && input.name ? input.name : `input_${order.length}`;
    if (name in required) continue; // names are unique in saved files; a duplicate could not be told apart
    required[name] = [String(input.type ?? "*"), { forceInput: true, tooltip: input.label || "" }];
    order.push(name);
  }
  const outputs = Array.isArray(sub.outputs) ? sub.outputs : [];
  const count = Array.isArray(sub.nodes) ? sub.nodes.length : 0;
  const def = new NodeDef(sub.id, {
    name: sub.id,
    display_name: sub.name || "Subgraph",
    category: "subgraph",
    description: `Subgraph "${sub.name || sub.id}" (${count} node${count === 1 ? "" : "s"} inside; not editable here).`,
    input: { required },
    input_order: { required: order },
    output: outputs.map((o) => String(o?.type ?? "*")),
    output_name: outputs.map((o, i) => (typeof o?.name === "string" ? o.name : `output_${i}`)),
  });
  def.subgraph = sub;
  return def;
}

/** NodeDefs for every subgraph saved with the graph (`graph.extra.definitions`), by subgraph id. */
export function subgraphDefs(graph) {
  const defs = new Map();
  const definitions = graph.extra?.definitions;
  if (!definitions) return defs;
  for (const [id, sub] of subgraphDefinitions({ definitions })) defs.set(id, subgraphNodeDef(sub));
  return defs;
}

/** Turn the placeholder `node` (a type the catalogue does not know) into an instance of the subgraph `def`. */
export function makeSubgraphInstance(node, def) {
  node.def = def;
  node.title = def.displayName;
  node.inputs = def.sockets.map((s) => ({ name: s.name, type: s.type, link: null }));
  node.outputs = def.outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i }));
  node.widgets = [];
  node.size = [Math.max(node.size[0], 240), node.size[1]];
}

/** The canvas node a server node id refers to: the node itself, or for a flattened inner id such as "12:5" (or
 * "12:7:5") the top-level instance "12". Returns null when neither exists. */
export function statusNode(graph, id) {
  const direct = graph.getNode(id);
  if (direct) return direct;
  const text = String(id);
  const cut = text.indexOf(":");
  return cut > 0 ? graph.getNode(text.slice(0, cut)) : null;
}
