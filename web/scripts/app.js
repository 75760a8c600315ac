// ComfyUI-compatible `app` for packs' JS (`import { app } from "../../scripts/app.js"`).
// registerExtension runs the extension's hooks we can honour (init, addCustomNodeDefs, beforeRegisterNodeDef,
// registerCustomNodes, setup, nodeCreated, loadedGraphNode), each inside try/catch, against the Tessera editor;
// everything else a pack reaches for is a no-op (tolerant.js), so it never breaks the editor.

import { api } from "./api.js";
import { noop, tolerant } from "./tolerant.js";

function report(ext, hook, error) {
  const name = (ext && ext.name) || "unnamed extension";
  console.warn(`extension ${name}: ${hook} failed`, error);
  compat.errors.push({ extension: name, hook, message: String((error && error.message) || error) });
}

async function callHook(ext, hook, ...args) {
  if (!ext || typeof ext[hook] !== "function") return undefined;
  try {
    return await ext[hook](...args);
  } catch (error) {
    report(ext, hook, error);
    return undefined;
  }
}

/** A node as pack code sees it: the editor node's fields, the pack-patched prototype, no-ops for the rest. */
function compatNode(node, nodeType) {
  const view = Object.create(nodeType ? nodeType.prototype : {});
  Object.assign(view, {
    id: node.id, type: node.type, comfyClass: node.type, title: node.title,
    pos: node.pos, size: node.size, mode: node.mode, properties: node.properties || {},
    widgets_values: node.widgets_values, widgets: [], inputs: [], outputs: [], editorNode: node,
  });
  return tolerant(view, `node ${node.type}`);
}

class CompatApp {
  constructor() {
    this.extensions = [];
    this.errors = [];
    this.nodeTypes = new Map();
    this.api = api;
    this.editor = null;
    this.nodeOutputs = {};
    this.ui = noop("app.ui");
    this.canvas = noop("app.canvas");
    this.canvasEl = null;
    this.vueAppReady = true;
    this._chain = Promise.resolve();
  }

  get graph() {
    const editor = this.editor;
    const nodes = () => (editor && editor.graph ? [...editor.graph.nodes.values()] : []);
    return tolerant({
      get _nodes() { return nodes(); },
      get nodes() { return nodes(); },
      getNodeById: (id) => nodes().find((n) => String(n.id) === String(id)) || null,
      findNodesByType: (type) => nodes().filter((n) => n.type === type),
      serialize: () => (editor ? editor.serializeWorkflow() : {}),
      setDirtyCanvas() {},
      change() {},
    }, "app.graph");
  }

  /** Register a pack's extension; its hooks run once the editor is attached, one extension at a time. */
  registerExtension(ext) {
    if (!ext || typeof ext !== "object") {
      report(ext, "registerExtension", new Error("an extension must be an object"));
      return;
    }
    if (ext.name && this.extensions.some((e) => e.name === ext.name)) {
      report(ext, "registerExtension", new Error(`an extension named ${ext.name} is already registered`));
      return;
    }
    this.extensions.push(ext);
    if (this.editor) this._schedule(() => this._start(ext));
  }

  /** Called by web/js/extensions.js with the editor app before packs are imported. */
  attach(editor) {
    if (this.editor === editor) return;
    this.editor = editor;
    editor.on?.("node-added", (node) => this._schedule(() => this._nodeCreated(node)));
    editor.on?.("workflow-loaded", () => this._schedule(() => this._graphLoaded()));
    for (const ext of this.extensions) this._schedule(() => this._start(ext));
  }

  /** Resolves when every hook scheduled so far has run. */
  whenIdle() {
    return this._chain;
  }

  _schedule(task) {
    this._chain = this._chain.then(task).catch((error) => console.warn("extension hook failed", error));
    return this._chain;
  }

  _nodeType(name, def) {
    let type = this.nodeTypes.get(name);
    if (!type) {
      type = function ComfyNode() {};
      type.comfyClass = name;
      type.title = (def && def.display_name) || name;
      type.nodeData = def;
      type.category = def && def.category;
      this.nodeTypes.set(name, type);
    }
    return type;
  }

  async _start(ext) {
    const self = app;
    await callHook(ext, "init", self);
    const defs = (this.editor && this.editor.catalogue) || {};
    await callHook(ext, "addCustomNodeDefs", defs, self);
    await callHook(ext, "getCustomWidgets", self);
    if (typeof ext.beforeRegisterNodeDef === "function") {
      for (const [name, def] of Object.entries(defs)) {
        await callHook(ext, "beforeRegisterNodeDef", this._nodeType(name, def), def, self);
      }
    }
    await callHook(ext, "registerCustomNodes", self);
    await callHook(ext, "setup", self);
  }

  async _nodeCreated(added) {
    const node = added && added.node && !added.type ? added.node : added;
    if (!node) return;
    const view = compatNode(node, this.nodeTypes.get(node.type));
    const created = this.nodeTypes.get(node.type)?.prototype.onNodeCreated;
    if (typeof created === "function") {
      try {
        created.call(view);
      } catch (error) {
        report({ name: node.type }, "onNodeCreated", error);
      }
    }
    for (const ext of this.extensions) await callHook(ext, "nodeCreated", view, app);
  }

  async _graphLoaded() {
    const nodes = this.editor && this.editor.graph ? [...this.editor.graph.nodes.values()] : [];
    for (const ext of this.extensions) {
      if (typeof ext.loadedGraphNode !== "function") continue;
      for (const node of nodes) {
        await callHook(ext, "loadedGraphNode", compatNode(node, this.nodeTypes.get(node.type)), app);
      }
    }
  }

  // -- ComfyUI app methods packs call, mapped onto the editor ------------------------------------------------------
  async graphToPrompt() {
    const { prompt, workflow } = this.editor.toApiPrompt();
    return { output: prompt, workflow };
  }

  async queuePrompt(_number, batchCount = 1) {
    const queue = this.editor && this.editor.running && this.editor.running.queue;
    if (!queue) return false;
    queue.batch.value = String(batchCount);
    return queue.queue();
  }

  async loadGraphData(workflow) {
    if (workflow && this.editor) return this.editor.loadWorkflow(workflow);
    return undefined;
  }

  async refreshComboInNodes() {
    if (this.editor && this.editor.refreshCatalogue) return this.editor.refreshCatalogue();
    return undefined;
  }
}

const compat = new CompatApp();
export const app = tolerant(compat, "app");
export const ComfyApp = CompatApp;
export default app;
