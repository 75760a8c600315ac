// Pointer interaction on the canvas: pan (drag empty space or middle button), zoom (wheel), select (click,
// shift/ctrl-click, ctrl-drag rubber band), drag nodes and groups, resize, and connect sockets by dragging (targets
// that cannot take the link are dimmed). Moves are batched per animation frame and touch only transforms and paths.

import { linkPath } from "./view.js";
import { slotPos } from "./node_view.js";
import { typesCompatible, PRIMITIVE } from "../graph/catalogue.js";

const CONTROLS = "input, textarea, select, button, label.widget-boolean, .widget-label, .widget-step";

export class Interaction {
  constructor(app, view) {
    this.app = app;
    this.view = view;
    this.graph = app.graph;
    this.root = view.root;
    this.drag = null;
    this.frame = 0;
    this.pointer = [0, 0]; // last pointer position, world coordinates (paste target)
    this.root.addEventListener("pointerdown", (e) => this.onDown(e));
    this.root.addEventListener("pointermove", (e) => this.onMove(e));
    this.root.addEventListener("pointerup", (e) => this.onUp(e));
    this.root.addEventListener("pointercancel", (e) => this.onUp(e));
    this.root.addEventListener("wheel", (e) => this.onWheel(e), { passive: false });
    this.root.addEventListener("dblclick", (e) => this.onDblClick(e));
    this.root.addEventListener("contextmenu", (e) => this.onContextMenu(e));
  }

  /** The last pointer position over the canvas, in world coordinates (where paste puts nodes). */
  pointerWorld() {
    if (this.lastClient) return this.view.toWorld(this.lastClient[0], this.lastClient[1]);
    return this.pointer;
  }

  nodeOf(el) {
    const dom = el?.closest?.(".node");
    return dom ? this.graph.getNode(dom.dataset.id) : null;
  }

  isEmpty(target) {
    return target === this.root || target === this.view.world || target === this.view.svg
      || target.classList?.contains("group") || target === this.view.nodeLayer || target === this.view.groupLayer;
  }

  // ---- pointer down: decide what this drag is

  onDown(e) {
    this.app.closePopups?.(e.target);
    this.view.rect = this.root.getBoundingClientRect();
    const t = e.target;
    this.pointer = this.view.toWorld(e.clientX, e.clientY);
    // a click on the canvas ends text entry, so shortcuts (delete, ctrl+z) reach the canvas again
    const active = document.activeElement;
    if (active && active !== document.body && active.matches?.("input, textarea, select") && !t.closest?.(CONTROLS)) active.blur();
    if (e.button === 1 || (e.button === 0 && this.isEmpty(t) && !(e.ctrlKey || e.metaKey || e.shiftKey))) {
      if (e.button === 0 && this.isEmpty(t)) this.view.clearSelection();
      return this.start(e, { kind: "pan", last: [e.clientX, e.clientY] });
    }
    if (e.button !== 0) return;
    if (this.isEmpty(t)) return this.startBand(e);
    if (t.closest(".group-title")) return this.startGroupDrag(e, Number(t.closest(".group").dataset.index));
    if (t.closest(".group-resize")) return this.startGroupResize(e, Number(t.closest(".group").dataset.index));
    const node = this.nodeOf(t);
    if (!node) return;
    const slot = t.closest(".slot");
    if (slot && t.closest(".dot, .slot-label") && !node.flags?.collapsed) {
      return slot.classList.contains("output") ? this.startConnect(e, node, Number(slot.dataset.index), "out")
        : this.startFromInput(e, node, slot.dataset.name);
    }
    if (t.closest(".node-resize")) return this.startResize(e, node);
    if (t.closest(CONTROLS)) {
      if (!this.view.selected.has(node.id)) this.view.select([node.id], e.shiftKey || e.ctrlKey || e.metaKey);
      return;
    }
    if (t.closest(".node-collapse")) {
      node.flags = { ...node.flags, collapsed: !node.flags?.collapsed };
      this.view.refreshNode(node);
      this.app.commit();
      return;
    }
    if (e.shiftKey || e.ctrlKey || e.metaKey) {
      if (this.view.selected.has(node.id)) { this.view.deselect(node.id); return; }
      this.view.select([node.id], true);
    } else if (!this.view.selected.has(node.id)) {
      this.view.select([node.id]);
    }
    this.view.raise(node.id); // z-index, not re-appending: moving the element would break double-click
    const nodes = this.view.selectedNodes();
    this.start(e, { kind: "nodes", nodes, from: nodes.map((n) => [...n.pos]), origin: [e.clientX, e.clientY] });
  }

  start(e, drag) {
    e.preventDefault();
    // pointer capture waits for the first move, so a plain click or double-click keeps its real target
    this.drag = { ...drag, pointerId: e.pointerId, moved: false, captured: false, x: e.clientX, y: e.clientY };
  }

  startBand(e) {
    const band = document.createElement("div");
    band.className = "selection-rect";
    this.root.append(band);
    const additive = e.shiftKey || e.ctrlKey || e.metaKey;
    this.start(e, { kind: "band", band, origin: [e.clientX, e.clientY], additive });
  }

  startGroupDrag(e, index) {
    const group = this.graph.groups[index];
    if (!group) return;
    const [gx, gy, gw, gh] = group.bounding;
    const inside = [...this.graph.nodes.values()].filter((n) => n.pos[0] >= gx && n.pos[1] >= gy
      && n.pos[0] + n.size[0] <= gx + gw && n.pos[1] <= gy + gh);
    this.start(e, { kind: "group", group, bounding: [...group.bounding], nodes: inside,
      from: inside.map((n) => [...n.pos]), origin: [e.clientX, e.clientY] });
  }

  startGroupResize(e, index) {
    const group = this.graph.groups[index];
    if (group) this.start(e, { kind: "group-resize", group, bounding: [...group.bounding], origin: [e.clientX, e.clientY] });
  }

  startResize(e, node) {
    const dom = this.view.views.get(node.id);
    // the minimum height is what the content needs: measured once here, not in the move loop
    dom.style.minHeight = "";
    const natural = dom.offsetHeight;
    this.start(e, { kind: "resize", node, dom, width: node.size[0], height: Math.max(natural, node.size[1]), natural,
      origin: [e.clientX, e.clientY] });
  }

  // ---- connecting

  /** Begin dragging a new link from an output ("out") or towards an output from an input ("in"). */
  startConnect(e, node, index, dir, inputName = null) {
    const temp = document.createElementNS("http://www.w3.org/2000/svg", "path");
    temp.classList.add("link", "temp");
    this.view.svg.append(temp);
    this.root.classList.add("connecting");
    const anchor = dir === "out" ? slotPos(node, false, index) : slotPos(node, true, node.inputIndex(inputName));
    this.markTargets(node, index, dir, inputName);
    this.start(e, { kind: "connect", node, index, dir, inputName, temp, anchor });
    this.updateTemp(e.clientX, e.clientY);
  }

  /** Dragging from a linked input picks the link up (to move or drop it); from a free input, connects backwards. */
  startFromInput(e, node, name) {
    const input = node.input(name);
    const link = input?.link != null ? this.graph.links.get(input.link) : null;
    if (link) {
      const origin = this.graph.getNode(link.origin_id);
      this.graph.removeLink(link.id);
      this.startConnect(e, origin, link.origin_slot, "out");
      this.drag.detached = true;
      return;
    }
    this.startConnect(e, node, 0, "in", name);
  }

  markTargets(node, index, dir, inputName) {
    const g = this.graph;
    if (dir === "out") {
      const upstream = g.upstream(node.id);
      for (const [id, dom] of this.view.views) {
        const target = g.getNode(id);
        for (const el of dom.querySelectorAll(".slot.input, .widget[data-name]")) {
          const name = el.dataset.name;
          if (el.classList.contains("widget") && (target.isConverted(name) || !target.widget(name))) continue;
          const ok = !g.canConnect(node, index, target, name, upstream);
          el.classList.add(ok ? "compatible" : "incompatible");
        }
      }
    } else {
      const input = node.input(inputName);
      const downstream = this.downstream(node.id);
      for (const [id, dom] of this.view.views) {
        const source = g.getNode(id);
        for (const el of dom.querySelectorAll(".slot.output")) {
          const i = Number(el.dataset.index);
          const ok = !downstream.has(source.id) && (source.type === PRIMITIVE ? !!input.widget
            : typesCompatible(g.outputType(source, i), input.type));
          el.classList.add(ok ? "compatible" : "incompatible");
        }
      }
    }
  }

  downstream(id) {
    const seen = new Set([id]);
    const stack = [id];
    while (stack.length) {
      const node = this.graph.getNode(stack.pop());
      for (const out of node?.outputs || []) for (const l of out.links || []) {
        const link = this.graph.links.get(l);
        if (link && !seen.has(link.target_id)) { seen.add(link.target_id); stack.push(link.target_id); }
      }
    }
    return seen;
  }

  clearTargets() {
    this.root.classList.remove("connecting");
    for (const el of this.root.querySelectorAll(".compatible, .incompatible")) el.classList.remove("compatible", "incompatible");
  }

  updateTemp(clientX, clientY) {
    const d = this.drag;
    const [wx, wy] = this.view.toWorld(clientX, clientY);
    const [ax, ay] = d.anchor;
    d.temp.setAttribute("d", d.dir === "out" ? linkPath(ax, ay, wx, wy) : linkPath(wx, wy, ax, ay));
  }

  finishConnect(e) {
    const d = this.drag;
    d.temp.remove();
    this.clearTargets();
    const hit = document.elementFromPoint(e.clientX, e.clientY);
    const target = hit && this.nodeOf(hit);
    let done = false;
    if (d.dir === "out") {
      if (target) {
        const slot = hit.closest(".slot.input"), widget = hit.closest(".widget[data-name]");
        const name = slot ? slot.dataset.name : (widget && target.widget(widget.dataset.name) ? widget.dataset.name
          : this.firstFreeInput(d.node, d.index, target));
        if (name != null) done = !!this.graph.connect(d.node.id, d.index, target.id, name);
      } else if (hit && this.isEmpty(hit) && !d.detached) {
        const type = this.graph.outputType(d.node, d.index);
        this.app.search.open(e.clientX, e.clientY, { output: type }, (node) => {
          const name = this.firstFreeInput(d.node, d.index, node);
          if (name != null) this.graph.connect(d.node.id, d.index, node.id, name);
        });
        return;
      }
    } else {
      const input = d.node.input(d.inputName);
      if (target) {
        const slot = hit.closest(".slot.output");
        let index = slot ? Number(slot.dataset.index) : target.outputs.findIndex((o, i) =>
          typesCompatible(this.graph.outputType(target, i), input.type));
        if (index >= 0) done = !!this.graph.connect(target.id, index, d.node.id, d.inputName);
      } else if (hit && this.isEmpty(hit)) {
        this.app.search.open(e.clientX, e.clientY, { input: input.type }, (node) => {
          const index = node.outputs.findIndex((o, i) => typesCompatible(this.graph.outputType(node, i), input.type));
          if (index >= 0) this.graph.connect(node.id, index, d.node.id, d.inputName);
        }, true);
        return;
      }
    }
    if (done || d.detached) this.app.commit();
  }

  /** The input of `target` a link from (node, slot) should go to: the first free compatible socket, else any. */
  firstFreeInput(node, slot, target) {
    const ok = target.inputs.filter((i) => !this.graph.canConnect(node, slot, target, i.name));
    const free = ok.find((i) => i.link == null) || ok[0];
    if (free) return free.name;
    const widget = target.widgets.find((w) => !w.control && !w.upload && !target.isConverted(w.name)
      && !this.graph.canConnect(node, slot, target, w.name));
    return widget ? widget.name : null;
  }

  // ---- moves, batched per frame

  onMove(e) {
    if (!this.drag || e.pointerId !== this.drag.pointerId) {
      if (!this.drag) this.lastClient = [e.clientX, e.clientY];
      return;
    }
    this.lastClient = [e.clientX, e.clientY];
    if (!this.drag.captured) {
      this.drag.captured = true;
      try { this.root.setPointerCapture(e.pointerId); } catch { /* pointer already gone */ }
    }
    this.drag.x = e.clientX;
    this.drag.y = e.clientY;
    this.drag.shift = e.shiftKey;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const d = this.drag;
    if (!d) return;
    const s = this.view.scale;
    switch (d.kind) {
      case "pan": {
        const dx = d.x - d.last[0], dy = d.y - d.last[1];
        if (dx || dy) { d.moved = true; this.view.panBy(dx, dy); }
        d.last = [d.x, d.y];
        break;
      }
      case "nodes": case "group": {
        let dx = (d.x - d.origin[0]) / s, dy = (d.y - d.origin[1]) / s;
        if (!d.moved && Math.abs(dx) * s < 3 && Math.abs(dy) * s < 3) break;
        d.moved = true;
        if (d.shift) { dx = Math.round(dx / 10) * 10; dy = Math.round(dy / 10) * 10; }
        d.nodes.forEach((n, i) => { n.pos[0] = Math.round(d.from[i][0] + dx); n.pos[1] = Math.round(d.from[i][1] + dy); });
        if (d.kind === "group") {
          d.group.bounding[0] = Math.round(d.bounding[0] + dx);
          d.group.bounding[1] = Math.round(d.bounding[1] + dy);
          this.placeGroup(d.group);
        }
        this.view.moveNodes(d.nodes);
        break;
      }
      case "group-resize": {
        d.moved = true;
        d.group.bounding[2] = Math.max(120, Math.round(d.bounding[2] + (d.x - d.origin[0]) / s));
        d.group.bounding[3] = Math.max(80, Math.round(d.bounding[3] + (d.y - d.origin[1]) / s));
        this.placeGroup(d.group);
        break;
      }
      case "resize": {
        d.moved = true;
        d.node.size[0] = Math.max(120, Math.round(d.width + (d.x - d.origin[0]) / s));
        d.node.size[1] = Math.max(d.natural, Math.round(d.height + (d.y - d.origin[1]) / s));
        d.dom.style.width = `${d.node.size[0]}px`;
        d.dom.style.minHeight = `${d.node.size[1]}px`;
        this.view.updateLinksOf([d.node]);
        break;
      }
      case "band": {
        d.moved = true;
        const r = this.view.rect;
        const x0 = Math.min(d.origin[0], d.x) - r.left, y0 = Math.min(d.origin[1], d.y) - r.top;
        Object.assign(d.band.style, { left: `${x0}px`, top: `${y0}px`,
          width: `${Math.abs(d.x - d.origin[0])}px`, height: `${Math.abs(d.y - d.origin[1])}px` });
        break;
      }
      case "connect": d.moved = true; this.updateTemp(d.x, d.y); break;
      default: break;
    }
  }

  placeGroup(group) {
    const dom = this.view.groupLayer.children[this.graph.groups.indexOf(group)];
    if (!dom) return;
    const [x, y, w, h] = group.bounding;
    dom.style.transform = `translate(${x}px, ${y}px)`;
    dom.style.width = `${w}px`;
    dom.style.height = `${h}px`;
  }

  onUp(e) {
    const d = this.drag;
    if (!d || e.pointerId !== d.pointerId) return;
    if (this.frame) { cancelAnimationFrame(this.frame); this.frame = 0; }
    d.x = e.clientX; d.y = e.clientY;
    if (d.kind !== "connect") this.flush();
    this.drag = null;
    try { this.root.releasePointerCapture(e.pointerId); } catch { /* already released */ }
    if (d.kind === "connect") { this.drag = d; this.finishConnect(e); this.drag = null; return; }
    if (d.kind === "band") {
      d.band.remove();
      if (!d.moved) { if (!d.additive) this.view.clearSelection(); return; }
      const [x0, y0] = this.view.toWorld(Math.min(d.origin[0], e.clientX), Math.min(d.origin[1], e.clientY));
      const [x1, y1] = this.view.toWorld(Math.max(d.origin[0], e.clientX), Math.max(d.origin[1], e.clientY));
      const hits = [];
      for (const [id, dom] of this.view.views) {
        const n = this.graph.getNode(id);
        const h = dom.offsetHeight || n.size[1];
        if (n.pos[0] < x1 && n.pos[0] + n.size[0] > x0 && n.pos[1] < y1 && n.pos[1] + h > y0) hits.push(id);
      }
      this.view.select(hits, d.additive);
      return;
    }
    if (d.moved && d.kind !== "pan") this.app.commit();
    if (d.kind === "pan" && d.moved) this.app.saveViewSoon();
  }

  onWheel(e) {
    const t = e.target;
    const scrollable = t.closest?.("textarea, select, .context-menu, #node-search, .node-images");
    if (scrollable && scrollable.scrollHeight > scrollable.clientHeight) return;
    e.preventDefault();
    this.view.rect = this.root.getBoundingClientRect();
    const factor = Math.exp(-Math.max(-100, Math.min(100, e.deltaY)) * 0.0025);
    this.view.zoomAt(e.clientX, e.clientY, factor);
    this.app.saveViewSoon();
  }

  onDblClick(e) {
    const t = e.target;
    if (this.isEmpty(t)) {
      e.preventDefault();
      this.app.search.open(e.clientX, e.clientY);
      return;
    }
    const gtitle = t.closest(".group-title");
    if (gtitle) {
      const group = this.graph.groups[Number(gtitle.parentElement.dataset.index)];
      this.app.editText(gtitle, group.title, (v) => { group.title = v; this.view.renderGroups(); this.app.commit(); });
      return;
    }
    const title = t.closest(".node-title");
    const node = title && this.nodeOf(title);
    if (node && !t.closest(".node-collapse")) {
      const text = title.querySelector(".node-title-text");
      this.app.editText(text, node.title, (v) => {
        node.title = v || node.def?.displayName || node.type;
        text.textContent = node.title;
        this.app.commit();
      });
    }
  }

  onContextMenu(e) {
    e.preventDefault();
    const t = e.target;
    this.view.rect = this.root.getBoundingClientRect();
    this.pointer = this.view.toWorld(e.clientX, e.clientY);
    const path = t.closest?.("path.link");
    if (path && !path.classList.contains("temp")) return this.app.menus.linkMenu(e, Number(path.dataset.linkId));
    const group = t.closest(".group-title");
    if (group) return this.app.menus.groupMenu(e, Number(group.parentElement.dataset.index));
    const node = this.nodeOf(t);
    if (node) {
      if (!this.view.selected.has(node.id)) this.view.select([node.id]);
      return this.app.menus.nodeMenu(e, node);
    }
    return this.app.menus.canvasMenu(e);
  }
}
