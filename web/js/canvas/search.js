// The node search box (double-click on empty canvas, or drop a link on empty canvas): fuzzy search over the
// catalogue, arrow keys to choose, Enter or click to add the node where the box was opened. Only the visible
// results get DOM; the search index is built on first use.

const MAX_RESULTS = 40;

export class NodeSearch {
  constructor(app) {
    this.app = app;
    this.box = null;
    document.addEventListener("pointerdown", (e) => {
      if (this.box && !e.target.closest?.("#node-search")) this.close();
    }, true);
  }

  get isOpen() {
    return !!this.box;
  }

  /** Open at a client point. `filter` ({output: type} or {input: type}) keeps nodes that can take/give a link;
   * `onPick(node)` runs after the node is added; `alignRight` puts the new node to the left of the point. */
  open(clientX, clientY, filter = null, onPick = null, alignRight = false) {
    this.close();
    const view = this.app.view;
    view.rect = view.root.getBoundingClientRect();
    const at = view.toWorld(clientX, clientY);
    const box = document.createElement("div");
    box.id = "node-search";
    const input = document.createElement("input");
    input.type = "text";
    input.placeholder = filter ? `Search nodes for ${filter.output || filter.input}…` : "Search nodes…";
    input.spellcheck = false;
    const list = document.createElement("div");
    list.className = "search-results";
    box.append(input, list);
    document.body.append(box);
    const r = box.getBoundingClientRect();
    box.style.left = `${Math.max(4, Math.min(clientX - 20, window.innerWidth - r.width - 8))}px`;
    box.style.top = `${Math.max(4, Math.min(clientY - 20, window.innerHeight - 360))}px`;
    this.box = box;
    this.state = { at, filter, onPick, alignRight, items: [], active: 0, input, list };
    input.addEventListener("input", () => this.update());
    input.addEventListener("keydown", (e) => this.onKey(e));
    list.addEventListener("pointerdown", (e) => e.preventDefault()); // keep focus in the input
    list.addEventListener("click", (e) => {
      const item = e.target.closest(".search-result");
      if (item) this.pick(item.dataset.type);
    });
    this.update();
    input.focus();
  }

  update() {
    const s = this.state;
    s.items = this.app.defs.search(s.input.value, MAX_RESULTS, s.filter);
    s.active = 0;
    s.list.textContent = "";
    const frag = document.createDocumentFragment();
    s.items.forEach((item, i) => {
      const row = document.createElement("div");
      row.className = "search-result" + (i === 0 ? " active" : "");
      row.dataset.type = item.type;
      const name = document.createElement("span");
      name.className = "search-name";
      name.textContent = item.display;
      const cat = document.createElement("span");
      cat.className = "search-category";
      cat.textContent = item.category;
      row.append(name, cat);
      const def = this.app.defs.def(item.type);
      if (def?.description) row.title = def.description;
      frag.append(row);
    });
    s.list.append(frag);
  }

  setActive(i) {
    const s = this.state;
    if (!s.items.length) return;
    s.active = (i + s.items.length) % s.items.length;
    [...s.list.children].forEach((row, k) => row.classList.toggle("active", k === s.active));
    s.list.children[s.active]?.scrollIntoView({ block: "nearest" });
  }

  onKey(e) {
    e.stopPropagation();
    const s = this.state;
    if (e.key === "ArrowDown") { e.preventDefault(); this.setActive(s.active + 1); }
    else if (e.key === "ArrowUp") { e.preventDefault(); this.setActive(s.active - 1); }
    else if (e.key === "Enter") { e.preventDefault(); if (s.items[s.active]) this.pick(s.items[s.active].type); }
    else if (e.key === "Escape") { e.preventDefault(); this.close(); }
  }

  pick(type) {
    const s = this.state;
    this.close();
    const pos = s.alignRight ? [s.at[0] - 320, s.at[1]] : s.at;
    const node = this.app.addNode(type, pos, false);
    if (node && s.onPick) s.onPick(node);
    this.app.view.select([node.id]);
    this.app.commit();
  }

  close() {
    if (this.box) this.box.remove();
    this.box = null;
  }
}
