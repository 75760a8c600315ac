// UI workflow → API prompt, client side, with the rules of graph/ui_format.py: widgets_values map onto widget inputs
// in catalogue order (a seed's control value and an upload button's value are skipped), muted nodes are dropped,
// bypassed nodes pass a same-typed input through, Reroutes are followed and PrimitiveNodes become literals.

import { CONTROL_VALUES, PRIMITIVE, REROUTE, VIRTUAL_TYPES } from "./catalogue.js";

const MUTED = 2, BYPASSED = 4;
const DROPPED = Symbol("dropped");

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

/** The API prompt for a UI workflow object; throws ExportError naming the node on a problem. */
export function uiToApi(workflow, catalogue) {
  const nodes = new Map();
  for (const n of workflow.nodes || []) nodes.set(String(n.id), n);
  const links = new Map();
  for (const e of workflow.links || []) {
    if (e == null) continue;
    const l = parseLink(e);
    links.set(String(l.id), l);
  }
  const mode = (n) => (Number.isInteger(n.mode) ? n.mode : 0);

  // Where the value on link `linkId` really comes from: [node id, slot], {literal}, or DROPPED.
  const resolve = (linkId, where) => {
    const seen = new Set();
    for (;;) {
      if (seen.has(String(linkId))) throw new ExportError(`${where}: links form a loop through link ${linkId}`);
      seen.add(String(linkId));
      const link = links.get(String(linkId));
      if (!link) throw new ExportError(`${where}: link ${linkId} is not in the workflow's links`);
      const node = nodes.get(String(link.origin_id));
      if (!node) throw new ExportError(`${where}: link ${link.id} comes from node #${link.origin_id}, which does not exist`);
      if (mode(node) === MUTED) return DROPPED;
      if (mode(node) === BYPASSED) {
        const outs = node.outputs || [];
        const wanted = outs[link.origin_slot]?.type ?? link.type;
        const slots = node.inputs || [];
        let chosen = slots[link.origin_slot] && typesMatch(slots[link.origin_slot].type, wanted) ? slots[link.origin_slot] : null;
        if (!chosen) chosen = slots.find((s) => typesMatch(s.type, wanted)) || null;
        if (!chosen || chosen.link == null) return DROPPED;
        linkId = chosen.link;
        continue;
      }
      if (node.type === REROUTE) {
        const src = (node.inputs || [])[0]?.link;
        if (src == null) return DROPPED;
        linkId = src;
        continue;
      }
      if (node.type === PRIMITIVE) {
        const v = node.widgets_values;
        const value = Array.isArray(v) ? v[0] : (v && typeof v === "object" ? Object.values(v)[0] : undefined);
        return value == null ? DROPPED : { literal: value };
      }
      if (VIRTUAL_TYPES.has(node.type)) {
        throw new ExportError(`${where}: link ${link.id} comes from node #${node.id} (${node.type}), which has no outputs`);
      }
      return [String(node.id), link.origin_slot];
    }
  };

  const prompt = {};
  for (const node of nodes.values()) {
    if (mode(node) === MUTED || mode(node) === BYPASSED || VIRTUAL_TYPES.has(node.type)) continue;
    const label = `Node #${node.id} (${node.type})`;
    const def = catalogue.def(node.type);
    if (!def) throw new ExportError(`Node #${node.id}: unknown node type '${node.type}'`);
    const inputs = widgetInputs(node.widgets_values, def);
    for (const [index, slot] of (node.inputs || []).entries()) {
      if (slot.link == null) continue;
      const name = slot.name || slot.widget?.name;
      if (!name) throw new ExportError(`${label}: linked input ${index} has no name`);
      const result = resolve(slot.link, `${label} input '${name}'`);
      if (result === DROPPED) delete inputs[name];
      else if (Array.isArray(result)) inputs[name] = result;
      else inputs[name] = wrap(result.literal);
    }
    const ordered = {};
    for (const spec of def.inputs) if (spec.name in inputs) ordered[spec.name] = inputs[spec.name];
    for (const [k, v] of Object.entries(inputs)) if (!(k in ordered)) ordered[k] = v;
    prompt[String(node.id)] = { class_type: node.type, inputs: ordered };
    if (node.title && node.title !== def.displayName) prompt[String(node.id)]._meta = { title: node.title };
  }
  return prompt;
}
