// The canvas view: one world container transformed for pan/zoom holding the groups, an SVG layer of links (cubic
// Béziers) and the node elements. It mirrors the graph model through the model's listener and redraws only what
// an event touches; dragging moves node transforms and the paths of their links, nothing else.

import { applyMode, applyStatus, placeNode, renderNode, slotPos, typeColor } from "./node_view.js";

const SVG = "http://www.w3.org/2000/svg";
export const MIN_SCALE = 0.1, MAX_SCALE = 4;
export const READABLE_SCALE = 0.6; // widget text stays legible down to about this zoom

export function linkPath(x1, y1, x2, y2) {
  const dx = Math.max(40, Math.abs(x2 - x1) * 0.5);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

/** The /view URL of an input-folder file named like a LoadImage combo value ("sub/a.png", "a.png [output]"). */
export function viewUrl(value) {
  let name = String(value), type = "input";
  const m = name.match(/^(.*) \[(input|output|temp)\]$/);
  if (m) { name = m[1]; type = m[2]; }
  const cut = name.lastIndexOf("/");
  const subfolder = cut >= 0 ? name.slice(0, cut) : "";
  const filename = cut >= 0 ? name.slice(cut + 1) : name;
  return `/view?filename=${encodeURIComponent(filename)}&type=${type}&subfolder=${encodeURIComponent(subfolder)}`;
}

export class CanvasView {
  constructor(app, root) {
    this.app = app;
    this.graph = app.graph;
    this.root = root;
    this.world = document.createElement("div");
    this.world.id = "graph-world";
    this.groupLayer = document.createElement("div");
    this.groupLayer.className = "group-layer";
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.classList.add("link-layer");
    this.nodeLayer = document.createElement("div");
    this.nodeLayer.className = "node-layer";
    this.world.append(this.groupLayer, this.svg, this.nodeLayer);
    root.append(this.world);
    this.views = new Map();
    this.linkEls = new Map();
    this.status = new Map();
    this.selected = new Set();
    this.scale = 1;
    this.offset = [0, 0];
    this.suspended = false;
    this.topZ = 1;
    this.graph.listener = (kind, data) => {
      if (!this.suspended) this.onGraphEvent(kind, data);
      if (kind === "node-added") app.emit("node-added", data); // every new node, loaded ones too (extensions)
    };
    this.rect = root.getBoundingClientRect();
    new ResizeObserver(() => { this.rect = root.getBoundingClientRect(); }).observe(root);
    this.applyTransform();
  }

  // ---- pan / zoom

  applyTransform() {
    const s = this.scale;
    this.world.style.transform = `translate(${this.offset[0] * s}px, ${this.offset[1] * s}px) scale(${s})`;
    this.root.style.setProperty("--zoom", String(s));
    this.root.classList.toggle("zoomed-out", s < 0.35);
  }

  /** World coordinates of a client (screen) point: screen = (world + offset) × scale. */
  toWorld(clientX, clientY) {
    return [(clientX - this.rect.left) / this.scale - this.offset[0], (clientY - this.rect.top) / this.scale - this.offset[1]];
  }

  panBy(dx, dy) {
    this.offset[0] += dx / this.scale;
    this.offset[1] += dy / this.scale;
    this.applyTransform();
  }

  zoomAt(clientX, clientY, factor) {
    const before = this.toWorld(clientX, clientY);
    this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.scale * factor));
    const after = this.toWorld(clientX, clientY);
    this.offset[0] += after[0] - before[0];
    this.offset[1] += after[1] - before[1];
    this.applyTransform();
  }

  setDs(ds) {
    if (ds && typeof ds.scale === "number" && Array.isArray(ds.offset)) {
      this.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, ds.scale));
      this.offset = [Number(ds.offset[0]) || 0, Number(ds.offset[1]) || 0];
    } else {
      this.fitView(true);
      return;
    }
    this.applyTransform();
  }

  getDs() {
    return { scale: this.scale, offset: [...this.offset] };
  }

  /** Pan and zoom so every node is in view. `readable`: never below READABLE_SCALE -- a large workflow opened
   * without a saved view then shows its top-left part at a size one can read, instead of all of it as specks. */
  fitView(readable = false) {
    this.rect = this.root.getBoundingClientRect();
    const nodes = [...this.graph.nodes.values()];
    if (!nodes.length) { this.scale = 1; this.offset = [0, 0]; this.applyTransform(); return; }
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of nodes) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1]);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1] + 30);
    }
    const w = Math.max(1, this.rect.width), h = Math.max(1, this.rect.height);
    this.scale = Math.min(1, Math.max(MIN_SCALE, Math.min(w / (x1 - x0 + 80), h / (y1 - y0 + 80))));
    this.offset = [-x0 + (w / this.scale - (x1 - x0)) / 2, -y0 + (h / this.scale - (y1 - y0)) / 2];
    if (readable && this.scale < READABLE_SCALE) {
      this.scale = READABLE_SCALE;
      this.offset = [-x0 + 40 / this.scale, -y0 + 40 / this.scale];
    }
    this.applyTransform();
  }

  // ---- model events

  onGraphEvent(kind, data) {
    switch (kind) {
      case "node-added": this.addNodeView(data); break;
      case "node-removed": this.removeNodeView(data); break;
      case "node-changed": this.refreshNode(data); break;
      case "node-mode": this.refreshMode(data); break;
      case "link-added": this.addLinkView(data); this.markSlots(data, true); break;
      case "link-removed": this.removeLinkView(data); this.markSlots(data, false); break;
      case "cleared": this.rebuild(); break;
      default: break;
    }
  }

  hooks(node) {
    return {
      onWidgetChange: (widget) => this.app.widgetChanged(node, widget),
      onUpload: (widget, file) => this.app.uploadImage(node, widget, file),
    };
  }

  previewUrls(node) {
    const upload = node.widgets.find((w) => w.upload);
    const target = upload && node.widget(upload.of);
    if (!target || !target.value) return null;
    // only files the server lists (an annotated "name [output]" is trusted): no 404s for missing inputs
    const known = /\[(output|temp)\]$/.test(target.value) || (target.spec?.choices || []).includes(target.value);
    return known ? [viewUrl(target.value)] : null;
  }

  addNodeView(node) {
    const dom = renderNode(node, this.hooks(node));
    this.views.set(node.id, dom);
    this.nodeLayer.append(dom);
    this.applyNodeStatus(node);
    return dom;
  }

  removeNodeView(node) {
    this.views.get(node.id)?.remove();
    this.views.delete(node.id);
    this.selected.delete(node.id);
    this.status.delete(node.id);
  }

  refreshNode(node) {
    const dom = this.views.get(node.id);
    if (!dom) return;
    renderNode(node, this.hooks(node), dom);
    if (this.selected.has(node.id)) dom.classList.add("selected");
    this.applyNodeStatus(node);
    this.updateLinksOf([node]);
  }

  refreshMode(node) {
    const dom = this.views.get(node.id);
    if (dom) applyMode(dom, node);
    this.updateLinksOf([node]);
  }

  /** Re-read widget values into their controls (after undo-free changes such as control_after_generate). */
  refreshWidgets(node) {
    const dom = this.views.get(node.id);
    if (!dom) return;
    for (const w of dom.querySelectorAll(".widget")) if (w.refresh) w.refresh();
    this.applyNodeStatus(node);
  }

  markSlots(link, connected) {
    const from = this.views.get(this.graph.getNode(link.origin_id)?.id);
    const to = this.views.get(this.graph.getNode(link.target_id)?.id);
    const fromNode = this.graph.getNode(link.origin_id);
    const out = from?.querySelector(`.slot.output[data-index="${link.origin_slot}"]`);
    if (out) out.classList.toggle("connected", connected || (fromNode.outputs[link.origin_slot]?.links || []).length > 0);
    const inp = to?.querySelector(`.slot.input[data-slot="${link.target_slot}"]`);
    if (inp) inp.classList.toggle("connected", connected);
  }

  // ---- links

  addLinkView(link) {
    const path = document.createElementNS(SVG, "path");
    path.classList.add("link");
    path.dataset.linkId = String(link.id);
    path.style.stroke = typeColor(link.type);
    this.linkEls.set(link.id, path);
    this.svg.append(path);
    this.updateLink(link);
  }

  removeLinkView(link) {
    this.linkEls.get(link.id)?.remove();
    this.linkEls.delete(link.id);
  }

  updateLink(link) {
    const path = this.linkEls.get(link.id);
    const from = this.graph.getNode(link.origin_id), to = this.graph.getNode(link.target_id);
    if (!path || !from || !to) return;
    const [x1, y1] = slotPos(from, false, link.origin_slot);
    const [x2, y2] = slotPos(to, true, link.target_slot);
    path.setAttribute("d", linkPath(x1, y1, x2, y2));
    const inactive = from.mode === 2 || to.mode === 2;
    path.classList.toggle("inactive", inactive);
  }

  updateLinksOf(nodes) {
    const ids = new Set();
    for (const n of nodes) for (const id of this.graph.linksOf(n)) ids.add(id);
    for (const id of ids) {
      const link = this.graph.links.get(id);
      if (link) this.updateLink(link);
    }
  }

  /** Move node elements to their model positions and redraw their links (the drag loop's only DOM writes). */
  moveNodes(nodes) {
    for (const n of nodes) {
      const dom = this.views.get(n.id);
      if (dom) placeNode(dom, n);
    }
    this.updateLinksOf(nodes);
  }

  // ---- groups

  renderGroups() {
    this.groupLayer.textContent = "";
    this.graph.groups.forEach((g, index) => {
      const dom = document.createElement("div");
      dom.className = "group";
      dom.dataset.index = String(index);
      const [x, y, w, h] = g.bounding;
      dom.style.transform = `translate(${x}px, ${y}px)`;
      dom.style.width = `${w}px`;
      dom.style.height = `${h}px`;
      if (g.color) dom.style.setProperty("--group-color", g.color);
      const title = document.createElement("div");
      title.className = "group-title";
      title.textContent = g.title;
      if (g.font_size) title.style.fontSize = `${g.font_size}px`;
      const handle = document.createElement("div");
      handle.className = "group-resize";
      dom.append(title, handle);
      this.groupLayer.append(dom);
    });
  }

  // ---- whole graph

  rebuild() {
    this.nodeLayer.textContent = "";
    this.svg.textContent = "";
    this.views.clear();
    this.linkEls.clear();
    this.selected.clear();
    const frag = document.createDocumentFragment();
    for (const node of this.graph.nodes.values()) {
      const dom = renderNode(node, this.hooks(node));
      this.views.set(node.id, dom);
      frag.append(dom);
    }
    this.nodeLayer.append(frag);
    for (const node of this.graph.nodes.values()) this.applyNodeStatus(node);
    for (const link of this.graph.links.values()) this.addLinkView(link);
    this.renderGroups();
  }

  /** Measure node heights into node.size (read once, e.g. before saving: the saved size should match the drawing). */
  syncSizes() {
    for (const [id, dom] of this.views) {
      const node = this.graph.getNode(id);
      if (node && dom.offsetHeight && !node.flags?.collapsed) node.size[1] = dom.offsetHeight;
    }
  }

  // ---- selection

  select(ids, additive = false) {
    if (!additive) this.clearSelection();
    for (const id of ids) {
      const node = this.graph.getNode(id);
      if (!node) continue;
      this.selected.add(node.id);
      this.views.get(node.id)?.classList.add("selected");
    }
  }

  /** Bring a node above the others. */
  raise(id) {
    const dom = this.views.get(id);
    if (dom) dom.style.zIndex = String(++this.topZ);
  }

  deselect(id) {
    this.selected.delete(id);
    this.views.get(id)?.classList.remove("selected");
  }

  clearSelection() {
    for (const id of this.selected) this.views.get(id)?.classList.remove("selected");
    this.selected.clear();
  }

  selectedNodes() {
    return [...this.selected].map((id) => this.graph.getNode(id)).filter(Boolean);
  }

  // ---- status

  applyNodeStatus(node) {
    const dom = this.views.get(node.id);
    if (dom) applyStatus(dom, node, this.status.get(node.id) || {}, this.previewUrls(node));
  }

  setStatus(id, patch) {
    const node = this.graph.getNode(id);
    if (!node) return;
    const merged = { ...(this.status.get(node.id) || {}), ...patch };
    this.status.set(node.id, merged);
    this.applyNodeStatus(node);
  }

  clearStatus() {
    for (const [id, s] of this.status) {
      const keep = s.images ? { images: s.images } : {};
      this.status.set(id, keep);
      const node = this.graph.getNode(id);
      if (node) this.applyNodeStatus(node);
    }
  }
}
