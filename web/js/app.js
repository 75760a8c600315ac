// The editor application object (`window.tessera`): owns the catalogue, the graph model and the canvas view, and
// offers the operations the toolbar, the running panel (web/js/run) and extensions use. See the editor contract.

import { Catalogue, CONTROL_VALUES, PRIMITIVE } from "./graph/catalogue.js";
import { Graph } from "./graph/graph.js";
import { apiToUi, isApiPrompt, isUiWorkflow, loadUiWorkflow, serializeGraph } from "./graph/ui_format.js";
import { uiToApi } from "./graph/api_export.js";
import { statusNode } from "./graph/subgraphs.js";
import { CanvasView } from "./canvas/view.js";
import { Interaction } from "./canvas/interaction.js";
import { NodeSearch } from "./canvas/search.js";
import { Menus } from "./canvas/context_menu.js";
import { Clipboard } from "./canvas/clipboard.js";
import { History } from "./canvas/history.js";
import { installKeyboard } from "./canvas/keyboard.js";
import { normaliseNumber } from "./canvas/widgets.js";
import { Autosave } from "./workflow/autosave.js";
import { WorkflowFiles } from "./workflow/files.js";
import { readPngText } from "./workflow/png.js";

const RANDOM_MAX = 2 ** 50; // random seeds stay exact in a JS number
const FIRST_EXAMPLE = "txt2img";

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

export class App {
  constructor({ canvasRoot, toolbar, sidePanel }) {
    this.canvasRoot = canvasRoot;
    this.toolbar = toolbar;
    this.sidePanel = sidePanel;
    this.catalogue = {};
    this.defs = new Catalogue({});
    this.graph = new Graph(this.defs);
    this.listeners = new Map();
    this.workflowName = "workflow";
    this.modified = false; // changed since opened or saved (see hasUnsavedChanges)
    this.savedPath = null; // "workflows/<name>.json" under the user's data when it came from / went to the server
    this.ready = new Promise((resolve, reject) => { this._ready = resolve; this._failed = reject; });
  }

  // ---- events

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event)?.delete(fn);
  }

  emit(event, data) {
    for (const fn of [...(this.listeners.get(event) || [])]) {
      try { fn(data); } catch (err) { console.error(`listener for "${event}" failed:`, err); }
    }
  }

  // ---- start-up

  async init() {
    try {
      this.view = new CanvasView(this, this.canvasRoot);
      this.interaction = new Interaction(this, this.view);
      this.search = new NodeSearch(this);
      this.menus = new Menus(this);
      this.clipboard = new Clipboard(this);
      this.history = new History(this);
      this.autosave = new Autosave(this);
      this.workflow = new WorkflowFiles(this);
      installKeyboard(this);
      this.setCatalogue(await getJson("/object_info"));
      const saved = this.autosave.load();
      if (saved) {
        try { this.loadWorkflow(saved, this.autosave.name() || "workflow", false); } catch (err) {
          console.warn("the autosaved workflow could not be restored:", err);
          this.graph.clear();
        }
      } else {
        // a first visit opens the text-to-image example rather than an empty canvas
        await this.loadExample(FIRST_EXAMPLE).catch((err) => console.warn("the first example did not open:", err));
      }
      this.history.reset();
      document.body.dataset.ready = "1";
      this._ready(this);
    } catch (err) {
      this.notify(`The editor could not start: ${err.message}`, "error");
      this._failed(err);
      throw err;
    }
  }

  setCatalogue(info) {
    this.catalogue = info;
    this.defs.setInfo(info);
  }

  /** Re-fetch /object_info (model lists change as files are added) and update every widget's choices. */
  async refreshCatalogue() {
    this.setCatalogue(await getJson("/object_info"));
    for (const node of this.graph.nodes.values()) {
      node.def = this.defs.def(node.type) || node.def;
      if (!node.def || node.type === PRIMITIVE) continue;
      for (const w of node.widgets) {
        if (w.control || w.upload) continue;
        const spec = node.def.input(w.name);
        if (spec) w.spec = spec;
      }
      this.view.refreshWidgets(node);
    }
    this.emit("catalogue-refreshed", this.catalogue);
    return this.catalogue;
  }

  // ---- editing

  /** Record a finished change: an undo step, the "graph-changed" event and an autosave. */
  commit() {
    if (!this.history) return;
    if (this.history.record()) {
      this.modified = true;
      this.emit("graph-changed", null);
    }
    this.autosave.schedule();
  }

  /** Whether replacing the graph would lose edits: it has nodes and changed since it was opened or saved. */
  hasUnsavedChanges() {
    return this.modified && this.graph.nodes.size > 0;
  }

  /** Ask before an open replaces edited work; true when it may go ahead. */
  confirmReplace(what) {
    if (!this.hasUnsavedChanges()) return true;
    return window.confirm(`Open ${what}? The current workflow has changes that are not saved; they will be lost.`);
  }

  saveViewSoon() {
    this.autosave?.schedule();
  }

  addNode(type, pos, commit = true) {
    const node = this.graph.addNode(type, pos);
    if (commit) this.commit();
    return node;
  }

  removeNodes(nodes) {
    if (!nodes.length) return;
    for (const n of nodes) this.graph.removeNode(n.id);
    this.commit();
  }

  widgetChanged(node, widget) {
    if (node.type === PRIMITIVE) this.graph.propagatePrimitive(node);
    if (widget.upload === undefined && node.widgets.some((w) => w.upload)) this.view.applyNodeStatus(node);
    this.commit();
  }

  /** Upload `file` into the input folder and select it in the node's image combo. */
  async uploadImage(node, widget, file) {
    const body = new FormData();
    body.append("image", file, file.name);
    body.append("type", "input");
    body.append("overwrite", "false");
    try {
      const response = await fetch("/upload/image", { method: "POST", body });
      if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
      const info = await response.json();
      const name = info.subfolder ? `${info.subfolder}/${info.name}` : info.name;
      const target = node.widget(widget.of);
      if (!target) return;
      const choices = target.spec.choices || [];
      if (!choices.includes(name)) target.spec = { ...target.spec, choices: [...choices, name] };
      target.value = name;
      this.view.refreshWidgets(node);
      this.commit();
    } catch (err) {
      this.notify(`Upload failed: ${err.message}`, "error");
    }
  }

  addGroup(bounding, title = "Group") {
    this.graph.groups.push({ title, bounding: bounding.map(Math.round), color: "#3f5570", font_size: 20 });
    this.view.renderGroups();
    this.commit();
  }

  groupSelected() {
    const nodes = this.view.selectedNodes();
    if (!nodes.length) return;
    this.view.syncSizes();
    const pad = 20;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])) - pad, y0 = Math.min(...nodes.map((n) => n.pos[1])) - pad - 40;
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])) + pad;
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1])) + pad;
    this.addGroup([x0, y0, x1 - x0, y1 - y0]);
  }

  nodesInGroup(group) {
    const [gx, gy, gw, gh] = group.bounding;
    return [...this.graph.nodes.values()].filter((n) => n.pos[0] >= gx && n.pos[1] >= gy
      && n.pos[0] + n.size[0] <= gx + gw && n.pos[1] <= gy + gh);
  }

  newWorkflow() {
    this.view.suspended = true;
    this.graph.clear(true);
    this.view.suspended = false;
    this.view.rebuild();
    this.workflowName = "workflow";
    this.commit();
    this.modified = false;
    this.savedPath = null;
    this.emit("workflow-loaded", this.serializeWorkflow());
  }

  // ---- workflows

  /** The UI-format workflow (docs/architecture.md §4.2, version 0.4). */
  serializeWorkflow(withView = true) {
    this.view?.syncSizes();
    const wf = serializeGraph(this.graph);
    if (withView && this.view) wf.extra.ds = this.view.getDs();
    return wf;
  }

  /** Load a UI workflow (0.4 or 1.0) or an API prompt; replaces the graph and resets undo. */
  loadWorkflow(data, name = null, commit = true) {
    if (typeof data === "string") data = JSON.parse(data);
    let ui;
    if (isUiWorkflow(data)) ui = data;
    else if (isApiPrompt(data)) ui = apiToUi(data, this.defs);
    else throw new Error("This is neither a UI workflow (nodes and links) nor an API prompt.");
    this.view.suspended = true;
    try {
      loadUiWorkflow(this.graph, ui);
    } finally {
      this.view.suspended = false;
      this.view.status.clear();
      this.view.rebuild();
    }
    this.view.setDs(ui.extra?.ds);
    if (name) this.workflowName = name;
    this.modified = false;
    this.history?.reset();
    if (commit) this.autosave.schedule();
    const missing = [...new Set([...this.graph.nodes.values()].filter((n) => !n.def).map((n) => n.type))];
    if (missing.length) this.notify(`Node types not installed: ${missing.join(", ")}`, "warning");
    this.emit("workflow-loaded", ui);
    return ui;
  }

  /** Undo/redo: load a snapshot without touching the view or the undo stack. */
  restoreSnapshot(wf) {
    const ds = this.view.getDs();
    this.view.suspended = true;
    try { loadUiWorkflow(this.graph, wf); } finally {
      this.view.suspended = false;
      this.view.rebuild();
    }
    this.view.setDs(ds);
    this.autosave.schedule();
    this.emit("graph-changed", null);
  }

  /** Open a .json workflow/prompt, or a .png with a "workflow" (else "prompt") text chunk. */
  async loadFile(file) {
    const base = file.name.replace(/\.(api\.)?(json|png)$/i, "");
    const isPng = /\.png$/i.test(file.name) || file.type === "image/png";
    const noWorkflow = () => Object.assign(new Error(`${file.name} has no embedded workflow`), { noWorkflow: true });
    if (isPng) {
      let text;
      try { text = await readPngText(await file.arrayBuffer()); } catch { throw noWorkflow(); }
      const payload = text.workflow || text.prompt;
      if (!payload) throw noWorkflow();
      return this.loadWorkflow(JSON.parse(payload), base);
    }
    if (/^image\//.test(file.type)) throw noWorkflow();
    let data;
    try { data = JSON.parse(await file.text()); } catch (err) { throw new Error(`${file.name} is not valid JSON: ${err.message}`); }
    return this.loadWorkflow(data, base);
  }

  async listExamples() {
    const data = await getJson("/workflow_examples");
    const list = Array.isArray(data) ? data : (data.examples || Object.keys(data));
    return list.map((e) => (typeof e === "string" ? e : e.name)).filter(Boolean);
  }

  async loadExample(name) {
    return this.loadWorkflow(await getJson(`/workflow_examples/${encodeURIComponent(name)}`), name);
  }

  /** {prompt, workflow}: the API prompt converted client-side (graph/ui_format.py rules) and the UI workflow. */
  toApiPrompt() {
    const workflow = this.serializeWorkflow();
    return { prompt: uiToApi(workflow, this.defs), workflow };
  }

  /** Apply control_after_generate (fixed / increment / decrement / randomize) after a prompt was queued. */
  afterQueued() {
    for (const node of this.graph.nodes.values()) {
      if (node.mode === 2) continue;
      let changed = false;
      for (const control of node.widgets.filter((w) => w.control)) {
        const target = node.widgets.find((w) => w.name === control.of && !w.control && !w.upload);
        if (!target || !CONTROL_VALUES.includes(control.value) || control.value === "fixed") continue;
        if (node.type !== PRIMITIVE && node.isConverted(target.name)) continue; // a link feeds it
        const next = nextValue(target, control.value);
        if (next !== target.value) { target.value = next; changed = true; }
      }
      if (changed) {
        if (node.type === PRIMITIVE) this.graph.propagatePrimitive(node);
        this.view.refreshWidgets(node);
      }
    }
    this.autosave.schedule();
    this.emit("after-queued", null);
  }

  // ---- run status (used by web/js/run)

  /** Status of node `id`; a flattened subgraph id ("12:5", "12:7:5") shows on its top-level instance "12". */
  setNodeStatus(id, patch) {
    const node = statusNode(this.graph, id);
    if (!node) return;
    patch = patch || {};
    if (patch.error && String(node.id) !== String(id)) {
      // the inner node's input names are not the instance's: name the inner node in the message instead
      patch = { ...patch, error: { message: `${patch.error.message} (inner node ${id})` } };
    }
    this.view.setStatus(node.id, patch);
  }

  clearNodeStatus() {
    this.view.clearStatus();
  }

  // ---- small UI helpers

  notify(message, kind = "info") {
    let box = document.getElementById("toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "toasts";
      document.body.append(box);
    }
    const toast = document.createElement("div");
    toast.className = `toast ${kind}`;
    toast.textContent = message;
    toast.addEventListener("click", () => toast.remove());
    box.append(toast);
    setTimeout(() => toast.remove(), kind === "error" ? 8000 : 4000);
    if (kind === "error") console.warn(message);
  }

  /** Edit the text of `el` in place; `done(value)` on Enter or blur, nothing on Escape. */
  editText(el, value, done) {
    const input = document.createElement("input");
    input.className = "inline-edit";
    input.value = value;
    const original = el.textContent;
    el.textContent = "";
    el.append(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = (save) => {
      if (finished) return;
      finished = true;
      const v = input.value.trim();
      input.remove();
      el.textContent = original;
      if (save && v !== value) done(v);
    };
    input.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
    });
    input.addEventListener("pointerdown", (e) => e.stopPropagation());
    input.addEventListener("dblclick", (e) => e.stopPropagation());
    input.addEventListener("blur", () => finish(true));
  }

  closePopups(target) {
    if (this.search?.isOpen && !target.closest?.("#node-search")) this.search.close();
  }
}

function nextValue(widget, control) {
  if (widget.type === "COMBO") {
    const choices = widget.spec?.choices || [];
    if (!choices.length) return widget.value;
    const i = choices.findIndex((c) => String(c) === String(widget.value));
    if (control === "randomize") return choices[Math.floor(Math.random() * choices.length)];
    const j = control === "increment" ? Math.min(choices.length - 1, i + 1) : Math.max(0, i - 1);
    return choices[i < 0 ? 0 : j];
  }
  if (widget.type !== "INT" && widget.type !== "FLOAT") return widget.value;
  const o = widget.spec?.options || {};
  const step = widget.type === "INT" ? 1 : (Number(o.step) > 0 ? Number(o.step) : 0.1);
  if (control === "increment") return normaliseNumber(Number(widget.value) + step, widget);
  if (control === "decrement") return normaliseNumber(Number(widget.value) - step, widget);
  const min = typeof o.min === "number" ? o.min : 0;
  const max = Math.min(typeof o.max === "number" ? o.max : RANDOM_MAX, min + RANDOM_MAX);
  const v = min + Math.random() * (max - min);
  return normaliseNumber(widget.type === "INT" ? Math.floor(v) : v, widget);
}
