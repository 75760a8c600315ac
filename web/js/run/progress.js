// Execution feedback on the canvas: the executing node highlighted with its progress bar, the overall progress bar
// (finished nodes / nodes to run), live previews as blob URLs on their node, and final outputs on the node and in
// the gallery.

import { Lightbox } from "./lightbox.js";

const GALLERY_LIMIT = 60;

export class ProgressTracker {
  constructor(app, run) {
    this.app = app;
    this.run = run;
    this.api = run.api;
    this.expected = new Map(); // prompt_id -> number of nodes in the prompt we queued
    this.promptId = null;
    this.current = null;
    this.ended = true;
    this.done = new Set();
    this.previewURLs = new Map(); // node id -> blob URL shown now (revoked when replaced)
    this.bar = document.getElementById("overall-progress");
    this.gallery = this.buildGallery();
    this.lightbox = new Lightbox();
    this.listen();
  }

  buildGallery() {
    const side = this.app.sidePanel || document.body;
    const gallery = document.createElement("section");
    gallery.id = "gallery";
    gallery.className = "run-panel";
    const title = document.createElement("h3");
    title.textContent = "Gallery";
    this.galleryGrid = document.createElement("div");
    this.galleryGrid.className = "gallery-grid";
    gallery.append(title, this.galleryGrid);
    side.append(gallery);
    return gallery;
  }

  /** Remember how many nodes a prompt we queued has, for the overall bar. */
  expect(promptId, prompt) {
    this.expected.set(promptId, Object.keys(prompt || {}).length);
    this.renderOverall();
  }

  /** The graph's own id for a server node id (graph ids may be numbers, the wire's are strings). */
  nodeId(id) {
    if (id == null) return null;
    const nodes = this.app.graph?.nodes;
    if (nodes && typeof nodes.has === "function") {
      if (nodes.has(id)) return id;
      const numeric = Number(id);
      if (Number.isFinite(numeric) && nodes.has(numeric)) return numeric;
      const text = String(id);
      if (nodes.has(text)) return text;
      const display = text.split(/[.:]/)[0]; // expanded ("5.0.1") and subgraph ("12:5") ids: the top node
      if (display !== text) return this.nodeId(display);
      return null;
    }
    return id;
  }

  setStatus(id, status) {
    const key = this.nodeId(id);
    if (key == null) return;
    try {
      this.app.setNodeStatus(key, status);
    } catch (error) {
      console.warn("setNodeStatus failed", key, error);
    }
  }

  listen() {
    const on = (type, fn) => this.api.addEventListener(type, (event) => fn(event.detail || {}));
    on("execution_start", (d) => this.start(d.prompt_id));
    on("execution_cached", (d) => {
      this.adopt(d.prompt_id);
      for (const id of d.nodes || []) this.done.add(String(id));
      this.renderOverall();
    });
    on("executing", (d) => this.executing(d));
    on("progress", (d) => {
      if (d.node == null || !d.max) return;
      this.setStatus(d.node, { executing: true, progress: Math.max(0, Math.min(1, d.value / d.max)) });
    });
    on("progress_state", (d) => {
      for (const [id, state] of Object.entries(d.nodes || {})) {
        if (state.state === "finished") this.done.add(String(id));
      }
      this.renderOverall();
    });
    on("executed", (d) => this.executed(d));
    on("b_preview", (d) => this.preview(d));
    on("execution_success", () => this.finish());
    on("execution_interrupted", () => this.finish(false));
    on("execution_error", () => this.finish(false));
  }

  adopt(promptId) {
    if (promptId && promptId !== this.promptId) this.start(promptId);
  }

  start(promptId) {
    if (this.current != null) this.setStatus(this.current, { executing: false, progress: null });
    this.promptId = promptId || null;
    this.current = null;
    this.done = new Set();
    this.ended = false;
    try {
      this.app.clearNodeStatus();
    } catch (error) {
      console.warn("clearNodeStatus failed", error);
    }
    document.body.dataset.running = "1";
    this.renderOverall();
  }

  executing(d) {
    this.adopt(d.prompt_id);
    const node = d.display_node ?? d.node;
    if (this.current != null && String(this.current) !== String(node)) {
      this.done.add(String(this.current));
      this.setStatus(this.current, { executing: false, progress: null });
    }
    if (node == null) {
      if (!this.ended) this.finish();
      this.current = null;
      return;
    }
    this.current = node;
    this.setStatus(node, { executing: true });
    this.renderOverall();
  }

  executed(d) {
    this.adopt(d.prompt_id);
    const node = d.display_node ?? d.node;
    this.done.add(String(d.node));
    const images = (d.output && d.output.images) || [];
    if (images.length) {
      const urls = images.map((image) => this.api.viewURL(image));
      this.dropPreview(node);
      this.setStatus(node, { images: urls });
      if (images.some((image) => image.type === "output")) this.addToGallery(urls, node);
    }
    this.renderOverall();
  }

  preview(d) {
    const node = d.nodeId ?? this.current;
    if (node == null || !d.blob) return;
    const url = URL.createObjectURL(d.blob);
    this.dropPreview(node);
    this.previewURLs.set(String(node), url);
    this.setStatus(node, { images: [url] });
  }

  dropPreview(node) {
    const old = this.previewURLs.get(String(node));
    if (old) {
      // revoke after the node has swapped to the new picture
      setTimeout(() => URL.revokeObjectURL(old), 1000);
      this.previewURLs.delete(String(node));
    }
  }

  finish(success = true) {
    this.ended = true;
    if (this.current != null) this.setStatus(this.current, { executing: false, progress: null });
    this.current = null;
    delete document.body.dataset.running;
    if (success && this.bar) this.bar.style.width = "100%";
    else this.renderOverall();
    this.run.queue?.scheduleRefresh();
  }

  renderOverall() {
    if (!this.bar) this.bar = document.getElementById("overall-progress");
    if (!this.bar) return;
    const total = this.expected.get(this.promptId) || Math.max(this.done.size + (this.current != null ? 1 : 0), 1);
    const fraction = Math.min(1, this.done.size / total);
    this.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
    this.bar.dataset.done = String(this.done.size);
    this.bar.dataset.total = String(total);
  }

  addToGallery(urls, node) {
    for (const url of urls) {
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.title = `node ${node}`;
      const img = document.createElement("img");
      img.src = url;
      img.alt = `output of node ${node}`;
      img.loading = "lazy";
      link.append(img);
      link.addEventListener("click", (e) => {
        if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return; // the browser's own: a new tab
        e.preventDefault();
        const links = [...this.galleryGrid.querySelectorAll("a")];
        this.lightbox.open(links, links.indexOf(link));
      });
      this.galleryGrid.prepend(link);
    }
    while (this.galleryGrid.children.length > GALLERY_LIMIT) this.galleryGrid.lastChild.remove();
  }
}
