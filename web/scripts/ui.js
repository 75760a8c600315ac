// `$el` (a small element builder many packs use) and no-op stand-ins for ComfyUI's dialog classes.

import { noop, tolerant } from "./tolerant.js";

/** $el("div.class#id", {textContent, style:{...}, parent, ...props}, [children]) → the element. */
export function $el(tag, propsOrChildren, maybeChildren) {
  const [name, ...rest] = String(tag).split(/(?=[.#])/);
  const element = document.createElement(name || "div");
  for (const part of rest) {
    if (part.startsWith(".")) element.classList.add(part.slice(1));
    else if (part.startsWith("#")) element.id = part.slice(1);
  }
  let props = propsOrChildren;
  let children = maybeChildren;
  if (Array.isArray(propsOrChildren) || propsOrChildren instanceof Node) {
    children = propsOrChildren;
    props = {};
  }
  const { parent, style, dataset, $, ...rest2 } = props || {};
  if (style) Object.assign(element.style, style);
  if (dataset) Object.assign(element.dataset, dataset);
  for (const [key, value] of Object.entries(rest2)) {
    try {
      element[key] = value;
    } catch {
      element.setAttribute(key, value);
    }
  }
  if (children) element.append(...(Array.isArray(children) ? children : [children]).filter((c) => c != null));
  if (parent) parent.append(element);
  if (typeof $ === "function") $(element);
  return element;
}

export class ComfyDialog {
  constructor() {
    this.element = $el("div", { hidden: true });
    return tolerant(this, "ComfyDialog");
  }
  show() {}
  close() {}
}

export const ComfyUI = noop("ComfyUI");
export default { $el, ComfyDialog };
