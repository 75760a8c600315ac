// One node's DOM: title bar, input/output slot rows, widgets, image previews and run status. Slot rows have a fixed
// height, so link end points are computed from the node's position without reading layout (cheap while dragging).

import { createWidget } from "./widgets.js";
import { REROUTE } from "../graph/catalogue.js";
import { MODE_BYPASSED, MODE_MUTED } from "../graph/graph.js";

export const TITLE_H = 30;
export const SLOT_H = 22;
export const SLOTS_PAD = 4;
export const REROUTE_H = 26;

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
};

const TYPE_COLORS = {
  MODEL: "#b39ddb", CLIP: "#ffd54f", VAE: "#ff8a80", CONDITIONING: "#ffb74d", LATENT: "#f48fb1", IMAGE: "#64b5f6",
  MASK: "#81c784", CONTROL_NET: "#4db6ac", UPSCALE_MODEL: "#a1887f", SAMPLER: "#ce93d8", SIGMAS: "#80cbc4",
  NOISE: "#b0bec5", GUIDER: "#fff176", INT: "#9ccc65", FLOAT: "#aed581", STRING: "#90a4ae", BOOLEAN: "#7986cb",
  COMBO: "#9e9e9e", "*": "#bdbdbd",
};

/** A stable colour per socket type (known types fixed, others hashed to a hue). */
export function typeColor(type) {
  const t = String(type ?? "*");
  if (TYPE_COLORS[t]) return TYPE_COLORS[t];
  let h = 0;
  for (let i = 0; i < t.length; i++) h = (h * 31 + t.charCodeAt(i)) % 360;
  return `hsl(${h}, 55%, 65%)`;
}

/** Where a slot's dot is, in world coordinates. */
export function slotPos(node, isInput, index) {
  const [x, y] = node.pos;
  if (node.type === REROUTE) return [isInput ? x : x + node.size[0], y + REROUTE_H / 2];
  if (node.flags?.collapsed) return [isInput ? x : x + node.size[0], y + TITLE_H / 2];
  return [isInput ? x : x + node.size[0], y + TITLE_H + SLOTS_PAD + index * SLOT_H + SLOT_H / 2];
}

function slotRow(node, slot, index, isInput) {
  const row = el("div", `slot ${isInput ? "input" : "output"}`);
  if (isInput) row.dataset.name = slot.name;
  else row.dataset.index = String(index);
  row.dataset.type = String(slot.type);
  row.dataset.slot = String(index);
  const dot = el("span", "dot");
  dot.style.setProperty("--slot-color", typeColor(slot.type));
  if (isInput ? slot.link != null : (slot.links || []).length) row.classList.add("connected");
  const label = el("span", "slot-label", slot.label || slot.name || (isInput ? "" : String(slot.type)));
  row.append(dot, label);
  const spec = isInput ? node.def?.input(slot.widget?.name ?? slot.name) : node.def?.outputs[index];
  const tip = spec?.tooltip;
  row.title = `${slot.name || ""} (${slot.type})${tip ? "\n" + tip : ""}`;
  return row;
}

/** Build (or rebuild into `root`) the element of `node`. `hooks`: {onWidgetChange, onUpload, status}. */
export function renderNode(node, hooks, root = null) {
  root = root || el("div");
  root.textContent = "";
  root.className = "node";
  root.dataset.id = String(node.id);
  root.dataset.type = node.type;
  if (node.type === REROUTE) root.classList.add("reroute");
  if (!node.def) root.classList.add("missing");
  if (node.flags?.collapsed) root.classList.add("collapsed");
  applyMode(root, node);
  root.style.width = `${node.size[0]}px`;
  // a saved height is honoured as a minimum (multiline text grows into it), as other editors draw it
  root.style.minHeight = node.type === REROUTE || node.flags?.collapsed ? "" : `${node.size[1]}px`;
  if (node.extra.bgcolor) root.style.setProperty("--node-bg", node.extra.bgcolor);
  if (node.extra.color) root.style.setProperty("--node-title-bg", node.extra.color);
  if (node.def?.description) root.title = "";

  const title = el("div", "node-title");
  const text = el("span", "node-title-text", node.title);
  title.title = node.def ? `${node.def.displayName} (${node.type})${node.def.description ? "\n\n" + node.def.description : ""}`
    : `${node.type}: this node type is not installed`;
  title.append(el("span", "node-collapse"), text);
  title.append(el("div", "node-progress"));
  root.append(title);

  const slots = el("div", "node-slots");
  const ins = el("div", "node-inputs"), outs = el("div", "node-outputs");
  node.inputs.forEach((s, i) => ins.append(slotRow(node, s, i, true)));
  node.outputs.forEach((s, i) => outs.append(slotRow(node, s, i, false)));
  slots.append(ins, outs);
  slots.style.minHeight = `${Math.max(node.inputs.length, node.outputs.length) * SLOT_H + SLOTS_PAD}px`;
  root.append(slots);

  const widgets = el("div", "node-widgets");
  for (const w of node.widgets) {
    const dom = createWidget(w, { onChange: hooks.onWidgetChange, onUpload: hooks.onUpload });
    const owner = w.of ?? w.name;
    if (node.isConverted(owner)) dom.classList.add("converted");
    widgets.append(dom);
  }
  if (node.rawWidgetValues !== undefined && Array.isArray(node.rawWidgetValues)) {
    node.rawWidgetValues.forEach((v, i) => {
      const row = el("div", "widget widget-raw", `${i}: ${JSON.stringify(v)}`);
      row.dataset.name = `value_${i}`;
      widgets.append(row);
    });
  }
  root.append(widgets);
  root.append(el("div", "node-images"));
  root.append(el("div", "node-error"));
  root.append(el("div", "node-resize"));
  placeNode(root, node);
  return root;
}

export function placeNode(root, node) {
  root.style.transform = `translate(${node.pos[0]}px, ${node.pos[1]}px)`;
}

export function applyMode(root, node) {
  root.classList.toggle("muted", node.mode === MODE_MUTED);
  root.classList.toggle("bypassed", node.mode === MODE_BYPASSED);
}

/** Reflect a run status {executing, progress, error, images} on the node element. */
export function applyStatus(root, node, status, previewUrls) {
  root.classList.toggle("executing", !!status.executing);
  const bar = root.querySelector(".node-progress");
  const p = typeof status.progress === "number" ? Math.max(0, Math.min(1, status.progress)) : null;
  bar.style.width = p == null ? "0%" : `${(p * 100).toFixed(1)}%`;
  bar.classList.toggle("active", p != null);
  const err = status.error;
  root.classList.toggle("has-error", !!err);
  const box = root.querySelector(".node-error");
  box.textContent = err ? String(err.message || "error") : "";
  root.querySelectorAll(".has-error").forEach((e) => e.classList.remove("has-error"));
  if (err) root.classList.add("has-error");
  for (const [name, msg] of Object.entries(err?.inputs || {})) {
    const css = CSS.escape(name);
    for (const e of root.querySelectorAll(`.widget[data-name="${css}"], .slot.input[data-name="${css}"]`)) {
      e.classList.add("has-error");
      e.title = String(msg);
    }
  }
  const images = root.querySelector(".node-images");
  const urls = status.images || previewUrls || [];
  const current = [...images.querySelectorAll("img")].map((i) => i.getAttribute("src"));
  if (current.join("\n") !== urls.join("\n")) {
    images.textContent = "";
    for (const url of urls) {
      const img = el("img");
      img.src = url;
      img.draggable = false;
      img.loading = "lazy";
      // scaled up to the node's width when smaller than it (256 px covers the default node width)
      img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 256), { once: true });
      images.append(img);
    }
  }
}
