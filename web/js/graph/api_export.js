// UI workflow → API prompt, client side, with the rules of graph/ui_format.py: widgets_values map onto widget inputs
// in catalogue order (a seed's control value and an upload button's value are skipped), muted nodes are dropped,
// bypassed nodes pass a same-typed input through, Reroutes are followed and PrimitiveNodes become literals, and
// subgraph instances (UI format 1.0) are flattened into their inner nodes with ids "<instance>:<inner>".

import { CONTROL_VALUES, PRIMITIVE, REROUTE, VIRTUAL_TYPES } from "./catalogue.js";
import { SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE, subgraphDefinitions } from "./subgraphs.js";

const MUTED = 2, BYPASSED = 4;
const DROPPED = Symbol("dropped");         // the source does not run: the input is left out
const UNCONNECTED = Symbol("unconnected"); // a subgraph input nobody feeds: as if the inner input had no link

export class ExportError extends Error {}

function wrap(value) {
  return Array.isArray(value) ? { __value__: value } : value;
}

function parseLink(entry) {
  if (Array.isArray(entry)) {
    const [id, origin_id, origin_slot, target_id, target_slot, type] = entry;
    return { id, origin_id, origin_slot, target_id, target_slot, type };
  }
  return entry;
}

/** `widgets_values` → {input name: value}, same skip rules as `_widget_inputs` in graph/ui_format.py. */
export function widgetInputs(values, def) {
  const widgets = def.widgets;
  if (values == null) return {};
  if (!Array.isArray(values)) {
    const out = {};
    for (const w of widgets) if (values[w.name] != null) out[w.name] = wrap(values[w.name]);
    return out;
  }
  const extras = widgets.filter((w) => w.control).length + widgets.filter((w) => w.upload).length;
  let surplus = values.length - widgets.length;
  const complete = surplus >= extras;
  const result = {};
  let pos = 0;
  for (const w of widgets) {
    if (pos >= values.length) break;
    const value = values[pos++];
    if (value != null) result[w.name] = wrap(value);
    if (surplus <= 0 || pos >= values.length) continue;
    const following = values[pos];
    if (w.control) {
      if (complete || (typeof following === "string" && CONTROL_VALUES.includes(following))) { pos++; surplus--; }
    } else if (w.upload) {
      pos++; surplus--;
    }
  }
  return result;
}

const typesMatch = (a, b) => a != null && b != null && String(a).trim() === String(b).trim();
const mode = (n) => (Number.isInteger(n.mode) ? n.mode : 0);
const isNodeId = (v) => Number.isInteger(v) || (typeof v === "string" && v !== "");

/** One graph level (the workflow, or one subgraph definition): nodes and links by id (as strings), checked once. */
function parseLevel(data, where) {
  if (!data || typeof data !== "object") throw new ExportError(`${where} must be an object`);
  if (!Array.isArray(data.nodes)) throw new ExportError(`${where}: 'nodes' must be a list`);
  const nodes = new Map();
  for (const [index, n] of data.nodes.entries()) {
    if (!n || typeof n !== "object" || !isNodeId(n.id)) throw new ExportError(`${where}: nodes[${index}] has no valid 'id'`);
    if (typeof n.type !== "string" || !n.type) throw new ExportError(`${where}: node #${n.id} has no valid 'type'`);
    if (nodes.has(String(n.id))) throw new ExportError(`${where}: node id ${n.id} is used by more than one node`);
    nodes.set(String(n.id), n);
  }
  const links = new Map();
  for (const e of data.links || []) {
    if (e == null) continue;
    const l = parseLink(e);
    if (!l || typeof l !== "object" || !isNodeId(l.id)) throw new ExportError(`${where}: invalid link entry ${JSON.stringify(e)}`);
    links.set(String(l.id), { ...l, origin_id: String(l.origin_id), target_id: String(l.target_id) });
  }
  const inputNames = (Array.isArray(data.inputs) ? data.inputs : []).map((i) => (i && typeof i === "object" ? i.name : null));
  return { where, nodes, links, inputNames };
}

/** The inner link feeding output `slot` of a subgraph level, if any. */
function outputLink(level, slot) {
  for (const link of level.links.values()) {
    if (link.target_id === String(SUBGRAPH_OUTPUT_NODE) && link.target_slot === slot) return link;
  }
  return null;
}

/** The API prompt for a UI workflow object; throws ExportError naming the node on a problem. Subgraph instances are
 * flattened: inner nodes get the id "<instance>:<inner>" (nested instances repeat the pattern), as on the server. */
export function uiToApi(workflow, catalogue) {
  const definitions = subgraphDefinitions(workflow);
  const parsed = new Map();   // subgraph id → parsed level
  const scopes = new Map();   // prefix → child scope
  const prompt = {};

  const levelOf = (subId) => {
    if (!parsed.has(subId)) {
      const d = definitions.get(subId);
      parsed.set(subId, parseLevel(d, `Subgraph '${d.name || subId}'`));
    }
    return parsed.get(subId);
  };
  // A scope: one level as it appears in the prompt, with the id prefix of its instance ("" at the root).
  const childScope = (scope, instance) => {
    const prefix = `${scope.prefix}${instance.id}:`;
    let child = scopes.get(prefix);
    if (!child) {
      if (scope.lineage.includes(instance.type)) {
        throw new ExportError(`Node #${scope.prefix}${instance.id}: subgraph '${instance.type}' contains an instance of itself`);
      }
      child = { level: levelOf(instance.type), prefix, parent: scope, instance, lineage: [...scope.lineage, instance.type] };
      scopes.set(prefix, child);
    }
    return child;
  };

  // One node back from `link` in `scope`: {ref}, {literal}, DROPPED, UNCONNECTED, or {follow: [scope, linkId]}.
  const step = (scope, link) => {
    if (link.origin_id === String(SUBGRAPH_INPUT_NODE) && scope.instance) {
      const slots = scope.instance.inputs || [];
      const name = scope.level.inputNames[link.origin_slot] ?? null;
      let match = name != null ? slots.find((s) => s && s.name === name) : null;
      if (!match && link.origin_slot < slots.length) match = slots[link.origin_slot];
      if (!match || match.link == null) return UNCONNECTED;
      return { follow: [scope.parent, match.link] };
    }
    const node = scope.level.nodes.get(link.origin_id);
    if (!node) {
      throw new Error(`link ${link.id} comes from node #${scope.prefix}${link.origin_id}, which is not in ${scope.level.where.toLowerCase()}`);
    }
    if (mode(node) === MUTED) return DROPPED;
    if (mode(node) === BYPASSED) {
      const wanted = (node.outputs || [])[link.origin_slot]?.type ?? link.type;
      const slots = node.inputs || [];
      let chosen = slots[link.origin_slot] && typesMatch(slots[link.origin_slot].type, wanted) ? slots[link.origin_slot] : null;
      if (!chosen) chosen = slots.find((s) => s && typesMatch(s.type, wanted)) || null;
      return !chosen || chosen.link == null ? DROPPED : { follow: [scope, chosen.link] };
    }
    if (node.type === REROUTE) {
      const src = (node.inputs || [])[0]?.link;
      return src == null ? DROPPED : { follow: [scope, src] };
    }
    if (node.type === PRIMITIVE) {
      const v = node.widgets_values;
      const value = Array.isArray(v) ? v[0] : (v && typeof v === "object" ? Object.values(v)[0] : undefined);
      return value == null ? DROPPED : { literal: value };
    }
    if (VIRTUAL_TYPES.has(node.type)) {
      throw new Error(`link ${link.id} comes from node #${scope.prefix}${node.id} (${node.type}), which has no outputs`);
    }
    if (definitions.has(node.type)) {
      const child = childScope(scope, node);
      const inner = outputLink(child.level, link.origin_slot);
      return inner ? { follow: [child, inner.id] } : DROPPED;
    }
    return { ref: [`${scope.prefix}${node.id}`, link.origin_slot] };
  };

  // Follow a link back through reroutes, bypassed nodes and subgraph borders to what really feeds it.
  const resolve = (scope, linkId, where) => {
    const seen = new Set();
    for (;;) {
      const key = `${scope.prefix}|${linkId}`;
      if (seen.has(key)) throw new ExportError(`${where}: links form a loop through link ${linkId}`);
      seen.add(key);
      const link = scope.level.links.get(String(linkId));
      if (!link) throw new ExportError(`${where}: link ${linkId} is not in the links of ${scope.level.where.toLowerCase()}`);
      let result;
      try { result = step(scope, link); } catch (err) {
        throw err instanceof ExportError ? err : new ExportError(`${where}: ${err.message}`);
      }
      if (!result.follow) return result;
      [scope, linkId] = result.follow;
    }
  };

  const emitNode = (scope, node) => {
    const id = `${scope.prefix}${node.id}`;
    if (id in prompt) throw new ExportError(`Node #${id}: this id is produced twice when subgraphs are flattened`);
    const label = `Node #${id} (${node.type})`;
    const def = catalogue.def(node.type);
    if (!def) throw new ExportError(`Node #${id}: unknown node type '${node.type}'`);
    const inputs = widgetInputs(node.widgets_values, def);
    for (const [index, slot] of (node.inputs || []).entries()) {
      if (!slot || slot.link == null) continue;
      const name = slot.name || slot.widget?.name;
      if (!name) throw new ExportError(`${label}: linked input ${index} has no name`);
      const result = resolve(scope, slot.link, `${label} input '${name}'`);
      if (result === DROPPED) delete inputs[name];
      else if (result === UNCONNECTED) continue; // the inner widget value (if any) stays
      else if (result.ref) inputs[name] = result.ref;
      else inputs[name] = wrap(result.literal);
    }
    const ordered = {};
    for (const spec of def.inputs) if (spec.name in inputs) ordered[spec.name] = inputs[spec.name];
    for (const [k, v] of Object.entries(inputs)) if (!(k in ordered)) ordered[k] = v;
    prompt[id] = { class_type: node.type, inputs: ordered };
    if (node.title && node.title !== def.displayName) prompt[id]._meta = { title: node.title };
  };

  const emitScope = (scope) => {
    for (const node of scope.level.nodes.values()) {
      if (mode(node) === MUTED || mode(node) === BYPASSED || VIRTUAL_TYPES.has(node.type)) continue;
      if (definitions.has(node.type)) emitScope(childScope(scope, node));
      else emitNode(scope, node);
    }
  };

  emitScope({ level: parseLevel(workflow, "Workflow"), prefix: "", parent: null, instance: null, lineage: [] });
  return prompt;
}
