// The graph model, separate from any drawing: nodes with their sockets and widget values, links, groups, ids.
// Nodes keep the UI-format shape (inputs[].link, outputs[].links, a flat widget list that becomes widgets_values),
// so saving is a plain copy and files from other editors round-trip. The view listens through `graph.listener`.

import {
  CONTROL_NAME, CONTROL_VALUES, PRIMITIVE, REROUTE, NOTE_TYPES, UPLOAD_NAME, typesCompatible,
} from "./catalogue.js";

export const MODE_ALWAYS = 0, MODE_MUTED = 2, MODE_BYPASSED = 4;

/** The starting value of a widget described by a catalogue input spec. */
export function defaultValue(spec) {
  const o = spec.options || {};
  switch (spec.type) {
    case "INT":
    case "FLOAT": {
      let v = typeof o.default === "number" ? o.default : (typeof o.min === "number" ? o.min : 0);
      if (typeof o.min === "number") v = Math.max(v, o.min);
      if (typeof o.max === "number") v = Math.min(v, o.max);
      return v;
    }
    case "BOOLEAN": return typeof o.default === "boolean" ? o.default : false;
    case "COMBO": {
      const choices = spec.choices || [];
      return o.default !== undefined ? o.default : (choices.length ? choices[0] : "");
    }
    default: return typeof o.default === "string" ? o.default : "";
  }
}

/** The widget list (saved order) for a set of widget specs: each widget, then its control / upload companion. */
export function widgetsFor(specs, controlDefault = "randomize") {
  const list = [];
  for (const spec of specs) {
    list.push({ name: spec.name, type: spec.type, spec, value: defaultValue(spec) });
    if (spec.control) list.push({ name: CONTROL_NAME, type: "COMBO", control: true, of: spec.name, value: controlDefault,
      spec: { name: CONTROL_NAME, type: "COMBO", choices: CONTROL_VALUES, options: {},
        tooltip: "What to do with the value after each queued run." } });
    if (spec.upload) list.push({ name: UPLOAD_NAME, type: "UPLOAD", upload: true, of: spec.name, value: "image",
      spec: { name: UPLOAD_NAME, type: "UPLOAD", options: {}, tooltip: "Upload an image into the input folder." } });
  }
  return list;
}

export class GraphNode {
  constructor(type, def) {
    this.id = 0;
    this.type = type;
    this.def = def; // NodeDef, or null for a type the catalogue does not know
    this.title = def ? def.displayName : type;
    this.pos = [0, 0];
    this.size = [type === REROUTE ? 90 : 300, 60];
    this.mode = MODE_ALWAYS;
    this.flags = {};
    this.order = 0;
    this.properties = { "Node name for S&R": type };
    this.inputs = [];
    this.outputs = [];
    this.widgets = [];
    this.extra = {}; // unknown keys from a loaded file, written back unchanged (color, bgcolor, shape, ...)
    if (!def) return;
    if (type === REROUTE) {
      this.inputs.push({ name: "", type: "*", link: null });
      this.outputs.push({ name: "", type: "*", links: [] });
      this.size = [90, 26];
    } else if (type === PRIMITIVE) {
      this.outputs.push({ name: "connect to widget input", type: "*", links: [] });
    } else if (NOTE_TYPES.has(type)) {
      this.widgets = [{ name: "text", type: "STRING", value: "",
        spec: { name: "text", type: "STRING", options: { multiline: true }, tooltip: "" } }];
      this.size = [320, 120];
    } else {
      this.inputs = def.sockets.map((s) => ({ name: s.name, type: s.type, link: null }));
      this.outputs = def.outputs.map((o, i) => ({ name: o.name, type: o.type, links: [], slot_index: i }));
      this.widgets = widgetsFor(def.widgets);
    }
  }

  get widgets_values() {
    if (this.rawWidgetValues !== undefined) return this.rawWidgetValues;
    return this.widgets.map((w) => w.value);
  }

  set widgets_values(values) {
    this.setWidgetValues(values);
  }

  widget(name) {
    return this.widgets.find((w) => w.name === name && !w.control && !w.upload) || null;
  }

  input(name) {
    return this.inputs.find((i) => i.name === name) || null;
  }

  inputIndex(name) {
    return this.inputs.findIndex((i) => i.name === name);
  }

  /** True when widget `name` is shown as an input socket instead of a control. */
  isConverted(name) {
    return this.inputs.some((i) => i.widget && i.widget.name === name);
  }

  /** Assign saved widget values, positionally or by name, with the same skip rules as graph/ui_format.py:
   * a control value after a seed is taken when the list holds every extra, or when it is one of the control words. */
  setWidgetValues(values) {
    if (!this.def && this.type !== PRIMITIVE) { this.rawWidgetValues = values; return; }
    if (values == null) return;
    if (!Array.isArray(values)) {
      for (const w of this.widgets) if (!w.control && !w.upload && values[w.name] !== undefined) w.value = values[w.name];
      return;
    }
    const mains = this.widgets.filter((w) => !w.control && !w.upload);
    const extras = this.widgets.length - mains.length;
    let surplus = values.length - mains.length;
    const complete = surplus >= extras;
    let pos = 0;
    for (let i = 0; i < this.widgets.length && pos < values.length; i++) {
      const w = this.widgets[i];
      if (!w.control && !w.upload) {
        if (values[pos] !== null && values[pos] !== undefined) w.value = values[pos];
        pos++;
        continue;
      }
      if (surplus <= 0) continue;
      if (w.control) {
        const v = values[pos];
        if (complete || CONTROL_VALUES.includes(v)) {
          if (CONTROL_VALUES.includes(v)) w.value = v;
          pos++; surplus--;
        }
      } else {
        pos++; surplus--;
      }
    }
  }
}

export class Graph {
  constructor(catalogue) {
    this.catalogue = catalogue;
    this.listener = null; // {event(kind, data)} — the canvas view
    this.clear(true);
  }

  _emit(kind, data) {
    if (this.listener) this.listener(kind, data);
  }

  clear(silent = false) {
    this.nodes = new Map();
    this.links = new Map();
    this.groups = [];
    this.lastNodeId = 0;
    this.lastLinkId = 0;
    this.extra = {};
    this.config = {};
    if (!silent) this._emit("cleared", null);
  }

  /** Create a node of `type` at `pos` (top-left, world coordinates); unknown types make a placeholder node. */
  addNode(type, pos = [0, 0], id = null) {
    const def = this.catalogue.def(type);
    const node = new GraphNode(type, def);
    node.id = id != null ? id : ++this.lastNodeId;
    if (typeof node.id === "number" && node.id > this.lastNodeId) this.lastNodeId = node.id;
    node.pos = [Math.round(pos[0]), Math.round(pos[1])];
    this.nodes.set(node.id, node);
    this._emit("node-added", node);
    return node;
  }

  getNode(id) {
    return this.nodes.get(id) ?? this.nodes.get(Number(id)) ?? this.nodes.get(String(id)) ?? null;
  }

  removeNode(id) {
    const node = this.getNode(id);
    if (!node) return;
    for (const input of node.inputs) if (input.link != null) this.removeLink(input.link);
    for (const output of node.outputs) for (const l of [...(output.links || [])]) this.removeLink(l);
    this.nodes.delete(node.id);
    this._emit("node-removed", node);
  }

  /** Output slot type as seen by consumers (a connected reroute or primitive passes on its concrete type). */
  outputType(node, slot) {
    return node.outputs[slot]?.type ?? "*";
  }

  /** Why a link from (fromNode, slot) into `toNode`'s input `name` is not allowed, or "" when it is. */
  canConnect(fromNode, slot, toNode, name, upstream = null) {
    if (!fromNode || !toNode || fromNode === toNode) return "same node";
    const out = fromNode.outputs[slot];
    if (!out) return "no such output";
    let input = toNode.input(name);
    const widget = input ? null : toNode.widget(name);
    if (!input && !widget) return "no such input";
    const inType = input ? input.type : widget.type;
    const isWidgetInput = !!widget || !!input.widget;
    if (fromNode.type === PRIMITIVE) {
      if (!isWidgetInput) return "a primitive only feeds widget inputs";
      if (out.type !== "*" && out.type !== inType) return "type mismatch";
    } else if (!typesCompatible(this.outputType(fromNode, slot), inType)) {
      return "type mismatch";
    }
    if ((upstream || this._upstream(fromNode.id)).has(toNode.id)) return "would make a cycle";
    return "";
  }

  /** Ids of every node that feeds `id`, itself included. */
  upstream(id) {
    return this._upstream(id);
  }

  _upstream(id) {
    const seen = new Set();
    const stack = [id];
    while (stack.length) {
      const node = this.getNode(stack.pop());
      if (!node || seen.has(node.id)) continue;
      seen.add(node.id);
      for (const input of node.inputs) {
        const link = input.link != null ? this.links.get(input.link) : null;
        if (link) stack.push(link.origin_id);
      }
    }
    return seen;
  }

  /** Link output `fromSlot` of `fromId` to input `toName` of `toId` (a widget name converts that widget first).
   * Replaces any link already on that input. Returns the link, or null when the types do not allow it. */
  connect(fromId, fromSlot, toId, toName, linkId = null, force = false) {
    const from = this.getNode(fromId), to = this.getNode(toId);
    if (typeof toName === "number") toName = to?.inputs[toName]?.name;
    const why = this.canConnect(from, fromSlot, to, toName);
    // `force` (loading files) keeps links whose types we cannot check, but never dangling ones
    if (why && !(force && from && to && from.outputs[fromSlot] && (to.input(toName) || to.widget(toName)))) return null;
    if (!to.input(toName)) this.convertWidgetToInput(to.id, toName);
    const index = to.inputIndex(toName);
    const input = to.inputs[index];
    if (input.link != null) this.removeLink(input.link);
    const out = from.outputs[fromSlot];
    const type = out.type === "*" && input.type !== "*" ? input.type : out.type;
    const id = linkId != null ? linkId : ++this.lastLinkId;
    if (id > this.lastLinkId) this.lastLinkId = id;
    const link = { id, origin_id: from.id, origin_slot: fromSlot, target_id: to.id, target_slot: index, type };
    this.links.set(id, link);
    input.link = id;
    (out.links ||= []).push(id);
    this._emit("link-added", link);
    this._adapt(from, to, input);
    return link;
  }

  /** Reroutes take on the type that reaches them; a primitive takes the shape of the widget it feeds. */
  _adapt(from, to, input) {
    if (to.type === REROUTE && from.type !== PRIMITIVE) {
      const t = this.outputType(from, this.links.get(input.link).origin_slot);
      if (t !== "*" && to.outputs[0].type !== t) {
        to.outputs[0].type = t;
        this._emit("node-changed", to);
      }
    }
    if (from.type === PRIMITIVE && from.widgets.length === 0 && input.widget) {
      this.configurePrimitive(from, to, input.widget.name);
    }
  }

  configurePrimitive(prim, target, widgetName) {
    const widget = target.widget(widgetName);
    if (!widget) return;
    prim.outputs[0].type = widget.type;
    prim.outputs[0].widget = { name: widgetName };
    prim.widgets = [{ name: "value", type: widget.type, spec: { ...widget.spec, name: "value" }, value: widget.value }];
    if (widget.spec.control) {
      prim.widgets.push({ name: CONTROL_NAME, type: "COMBO", control: true, of: "value", value: "fixed",
        spec: { name: CONTROL_NAME, type: "COMBO", choices: CONTROL_VALUES, options: {} } });
    }
    this._emit("node-changed", prim);
  }

  /** A primitive's value goes into every widget it feeds, so the targets stay consistent when it is removed. */
  propagatePrimitive(prim) {
    const value = prim.widgets[0]?.value;
    for (const id of prim.outputs[0]?.links || []) {
      const link = this.links.get(id);
      const target = link && this.getNode(link.target_id);
      const input = target?.inputs[link.target_slot];
      const w = input?.widget && target.widget(input.widget.name);
      if (w) w.value = value;
    }
  }

  removeLink(id) {
    const link = this.links.get(id);
    if (!link) return;
    this.links.delete(id);
    const from = this.getNode(link.origin_id), to = this.getNode(link.target_id);
    const out = from?.outputs[link.origin_slot];
    if (out?.links) out.links = out.links.filter((l) => l !== id);
    const input = to?.inputs[link.target_slot];
    if (input && input.link === id) input.link = null;
    this._emit("link-removed", link);
    if (from?.type === PRIMITIVE && out && out.links.length === 0) {
      from.widgets = [];
      out.type = "*";
      delete out.widget;
      this._emit("node-changed", from);
    }
  }

  disconnectInput(nodeId, name) {
    const input = this.getNode(nodeId)?.input(name);
    if (input && input.link != null) this.removeLink(input.link);
  }

  /** Show widget `name` as an input socket (appended after the existing inputs). */
  convertWidgetToInput(nodeId, name) {
    const node = this.getNode(nodeId);
    const widget = node?.widget(name);
    if (!widget || node.isConverted(name)) return false;
    node.inputs.push({ name, type: widget.type, link: null, widget: { name } });
    this._emit("node-changed", node);
    return true;
  }

  /** Turn a converted input back into a widget; its link (if any) is removed and later slots move up. */
  convertInputToWidget(nodeId, name) {
    const node = this.getNode(nodeId);
    const index = node ? node.inputs.findIndex((i) => i.widget && i.widget.name === name) : -1;
    if (index < 0) return false;
    if (node.inputs[index].link != null) this.removeLink(node.inputs[index].link);
    node.inputs.splice(index, 1);
    for (let i = index; i < node.inputs.length; i++) {
      const link = node.inputs[i].link != null ? this.links.get(node.inputs[i].link) : null;
      if (link) link.target_slot = i;
    }
    this._emit("node-changed", node);
    return true;
  }

  setMode(nodeId, mode) {
    const node = this.getNode(nodeId);
    if (!node) return;
    node.mode = mode;
    this._emit("node-mode", node);
  }

  /** Links touching node `id` (for redrawing while it moves). */
  linksOf(node) {
    const ids = [];
    for (const i of node.inputs) if (i.link != null) ids.push(i.link);
    for (const o of node.outputs) for (const l of o.links || []) ids.push(l);
    return ids;
  }
}
