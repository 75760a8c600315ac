// The node catalogue (/object_info) as the editor reads it: which inputs are widgets and which are sockets, in what
// order widget values are saved, and which socket types may be linked. The rules match graph/ui_format.py so a
// workflow saved here converts to the same prompt on the server.

export const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const SEED_NAMES = new Set(["seed", "noise_seed"]);
export const CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"];
export const CONTROL_NAME = "control_after_generate";
export const UPLOAD_NAME = "upload";

// Editor-only node types: drawn and saved, never sent to run.
export const REROUTE = "Reroute";
export const PRIMITIVE = "PrimitiveNode";
export const NOTE_TYPES = new Set(["Note", "MarkdownNote"]);
export const VIRTUAL_TYPES = new Set([REROUTE, PRIMITIVE, ...NOTE_TYPES]);

const VIRTUAL_ENTRIES = {
  [REROUTE]: { name: REROUTE, display_name: "Reroute", category: "utils", description: "Passes a link through; tidies long links.", input: { required: {} }, output: ["*"], output_name: [""] },
  [PRIMITIVE]: { name: PRIMITIVE, display_name: "Primitive", category: "utils", description: "One value that feeds widget inputs of other nodes (connect it to a converted widget).", input: { required: {} }, output: ["*"], output_name: ["connect to widget input"] },
  Note: { name: "Note", display_name: "Note", category: "utils", description: "A text note on the canvas; it does not run.", input: { required: {} }, output: [], output_name: [] },
  MarkdownNote: { name: "MarkdownNote", display_name: "Markdown Note", category: "utils", description: "A text note on the canvas; it does not run.", input: { required: {} }, output: [], output_name: [] },
};

/** Split a socket type into its members ("INT,FLOAT" → ["INT","FLOAT"]). */
function parts(type) {
  return String(type ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** True when an output of type `from` may feed an input of type `to`: exact match, "*" on either side, or
 * any shared member of comma unions. */
export function typesCompatible(from, to) {
  if (from == null || to == null) return false;
  if (from === to) return true;
  const a = parts(from), b = parts(to);
  if (a.includes("*") || b.includes("*") || a.length === 0 || b.length === 0) return true;
  return a.some((t) => b.includes(t));
}

/** One declared input, normalised: {name, type, section, options, choices, isWidget, isCombo, control, upload}. */
function parseInput(name, raw, section) {
  let head = Array.isArray(raw) ? raw[0] : raw;
  const options = (Array.isArray(raw) && raw[1] && typeof raw[1] === "object") ? raw[1] : {};
  let choices = null;
  let type;
  if (Array.isArray(head)) {
    type = "COMBO";
    choices = head;
  } else if (head === "COMBO") {
    type = "COMBO";
    choices = Array.isArray(options.options) ? options.options : [];
  } else {
    type = String(head);
  }
  const isCombo = type === "COMBO";
  const isWidget = WIDGET_TYPES.has(type) && !options.forceInput && section !== "hidden";
  const control = isWidget && (!!options.control_after_generate || (type === "INT" && SEED_NAMES.has(name)));
  const upload = isWidget && isCombo && !!options.image_upload;
  return { name, type, section, options, choices, isWidget, isCombo, control, upload, tooltip: options.tooltip || "" };
}

/** Parsed view of one /object_info entry, computed once per type and cached on the catalogue. */
export class NodeDef {
  constructor(name, entry) {
    this.name = name;
    this.entry = entry;
    this.displayName = entry.display_name || name;
    this.category = entry.category || "";
    this.description = entry.description || "";
    this.outputNode = !!entry.output_node;
    this.deprecated = !!entry.deprecated;
    this.virtual = VIRTUAL_TYPES.has(name);
    const sections = entry.input || {};
    const order = entry.input_order || {};
    this.inputs = [];
    for (const section of ["required", "optional"]) {
      const declared = sections[section] || {};
      const names = Array.isArray(order[section]) ? order[section].filter((n) => n in declared) : [];
      for (const n of Object.keys(declared)) if (!names.includes(n)) names.push(n);
      for (const n of names) this.inputs.push(parseInput(n, declared[n], section));
    }
    this.widgets = this.inputs.filter((i) => i.isWidget);
    this.sockets = this.inputs.filter((i) => !i.isWidget);
    const outs = entry.output || [];
    const names = entry.output_name || [];
    const tips = entry.output_tooltips || [];
    const lists = entry.output_is_list || [];
    this.outputs = outs.map((t, i) => ({
      type: Array.isArray(t) ? "COMBO" : String(t),
      name: names[i] ?? String(t),
      tooltip: tips[i] || "",
      isList: !!lists[i],
    }));
  }

  input(name) {
    return this.inputs.find((i) => i.name === name) || null;
  }
}

/** The catalogue: raw /object_info plus cached NodeDefs and a lazily built fuzzy search index. */
export class Catalogue {
  constructor(info = {}) {
    this.setInfo(info);
  }

  setInfo(info) {
    this.info = info || {};
    this._defs = new Map();
    this._index = null;
  }

  has(type) {
    return type in this.info || VIRTUAL_TYPES.has(type);
  }

  def(type) {
    let d = this._defs.get(type);
    if (!d) {
      const entry = this.info[type] || VIRTUAL_ENTRIES[type];
      if (!entry) return null;
      d = new NodeDef(type, entry);
      this._defs.set(type, d);
    }
    return d;
  }

  types() {
    const all = Object.keys(this.info);
    for (const v of Object.keys(VIRTUAL_ENTRIES)) if (!(v in this.info)) all.push(v);
    return all;
  }

  /** Nested category tree {children: Map(name → tree), types: [type]} for the "Add node" menu. */
  categoryTree() {
    const root = { children: new Map(), types: [] };
    for (const type of this.types()) {
      const entry = this.info[type] || VIRTUAL_ENTRIES[type];
      if (entry.deprecated) continue;
      let node = root;
      for (const part of String(entry.category || "uncategorised").split("/").filter(Boolean)) {
        if (!node.children.has(part)) node.children.set(part, { children: new Map(), types: [] });
        node = node.children.get(part);
      }
      node.types.push(type);
    }
    return root;
  }

  _buildIndex() {
    this._index = this.types().map((type) => {
      const e = this.info[type] || VIRTUAL_ENTRIES[type];
      const display = e.display_name || type;
      return { type, display, category: e.category || "", deprecated: !!e.deprecated,
        hay: `${display} ${type}`.toLowerCase(), cat: String(e.category || "").toLowerCase(),
        outputs: (e.output || []).map(String), inputs: e.input || {} };
    });
  }

  /** Fuzzy search: every query character must appear in order; contiguous and word-start matches rank higher.
   * `filter` = {output: type} or {input: type} keeps only nodes that can take/give that type. */
  search(query, limit = 50, filter = null) {
    if (!this._index) this._buildIndex();
    const q = String(query || "").trim().toLowerCase();
    const results = [];
    for (const item of this._index) {
      if (filter && !matchesFilter(item, filter)) continue;
      let score = q ? fuzzyScore(q, item.hay) : 0;
      if (score < 0 && q) {
        const c = fuzzyScore(q, item.cat);
        if (c < 0) continue;
        score = c - 50;
      }
      if (item.deprecated) score -= 100;
      results.push({ item, score });
    }
    results.sort((a, b) => b.score - a.score || a.item.display.localeCompare(b.item.display));
    return results.slice(0, limit).map((r) => r.item);
  }
}

function matchesFilter(item, filter) {
  if (filter.output) { // the node must have an input that accepts `output`
    if (item.type === REROUTE) return true;
    for (const section of ["required", "optional"]) {
      for (const [name, raw] of Object.entries(item.inputs[section] || {})) {
        const spec = parseInput(name, raw, section);
        if (typesCompatible(filter.output, spec.type)) return true;
      }
    }
    return false;
  }
  if (filter.input) return item.type === REROUTE || item.outputs.some((t) => typesCompatible(t, filter.input));
  return true;
}

/** Score of `q` as a subsequence of `text` (higher is better), or -1 when it is not one. */
export function fuzzyScore(q, text) {
  const direct = text.indexOf(q);
  if (direct >= 0) return 1000 - direct - text.length * 0.1 + (direct === 0 || text[direct - 1] === " " ? 200 : 0);
  let score = 0, ti = 0, run = 0;
  for (let qi = 0; qi < q.length; qi++) {
    const ch = q[qi];
    if (ch === " ") continue;
    const found = text.indexOf(ch, ti);
    if (found < 0) return -1;
    run = found === ti ? run + 1 : 0;
    score += 10 + run * 5 + (found === 0 || " _/-".includes(text[found - 1]) ? 15 : 0) - Math.min(found - ti, 10);
    ti = found + 1;
  }
  return score - text.length * 0.1;
}
