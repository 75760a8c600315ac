// Right-click menus (`.context-menu`): the canvas menu (Add node by category, groups, paste, fit), the node menu
// (rename, mute, bypass, convert widgets, clone, remove...), the link menu (delete, add reroute) and the group menu.
// Submenus are built when hovered, so the whole catalogue never becomes DOM at once.

import { MODE_ALWAYS, MODE_BYPASSED, MODE_MUTED } from "../graph/graph.js";
import { REROUTE } from "../graph/catalogue.js";

const COLORS = { red: "#5a2a2a", brown: "#4a3a28", green: "#2a4a2e", blue: "#283c5a", purple: "#42305a",
  cyan: "#25484c", yellow: "#55502a", black: "#1b1b1b" };

export class Menus {
  constructor(app) {
    this.app = app;
    this.open = [];
    document.addEventListener("pointerdown", (e) => {
      if (!e.target.closest?.(".context-menu")) this.close();
    }, true);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
  }

  close(fromLevel = 0) {
    while (this.open.length > fromLevel) this.open.pop().remove();
  }

  /** Show `items` at a client point. item: {label, action?, submenu?: () => items, disabled?, separator?} */
  show(x, y, items, level = 0) {
    this.close(level);
    const menu = document.createElement("div");
    menu.className = "context-menu";
    for (const item of items) {
      if (item.separator) { menu.append(Object.assign(document.createElement("div"), { className: "menu-separator" })); continue; }
      const row = document.createElement("div");
      row.className = "menu-item" + (item.submenu ? " has-submenu" : "") + (item.disabled ? " disabled" : "");
      row.textContent = item.label;
      if (item.title) row.title = item.title;
      if (item.type) row.dataset.type = item.type;
      const openSub = () => {
        const r = row.getBoundingClientRect();
        this.show(r.right - 2, r.top - 4, item.submenu(), level + 1);
      };
      row.addEventListener("pointerenter", () => {
        if (item.submenu && !item.disabled) openSub();
        else this.close(level + 1);
      });
      row.addEventListener("click", (e) => {
        e.stopPropagation();
        if (item.disabled) return;
        if (item.submenu) { openSub(); return; }
        this.close();
        item.action?.();
      });
      menu.append(row);
    }
    menu.addEventListener("contextmenu", (e) => e.preventDefault());
    menu.addEventListener("wheel", (e) => e.stopPropagation());
    document.body.append(menu);
    const r = menu.getBoundingClientRect();
    menu.style.left = `${Math.max(0, Math.min(x, window.innerWidth - r.width - 4))}px`;
    menu.style.top = `${Math.max(0, Math.min(y, window.innerHeight - r.height - 4))}px`;
    this.open.push(menu);
    return menu;
  }

  categoryItems(tree, at) {
    const items = [];
    for (const [name, child] of [...tree.children].sort((a, b) => a[0].localeCompare(b[0]))) {
      items.push({ label: name, submenu: () => this.categoryItems(child, at) });
    }
    const cat = this.app.defs;
    for (const type of [...tree.types].sort((a, b) => cat.def(a).displayName.localeCompare(cat.def(b).displayName))) {
      const def = cat.def(type);
      items.push({ label: def.displayName, type, title: def.description,
        action: () => { const n = this.app.addNode(type, at, false); this.app.view.select([n.id]); this.app.commit(); } });
    }
    return items;
  }

  canvasMenu(e) {
    const app = this.app;
    const at = app.view.toWorld(e.clientX, e.clientY);
    this.show(e.clientX, e.clientY, [
      { label: "Add node", submenu: () => this.categoryItems(app.defs.categoryTree(), at) },
      { label: "Search nodes…", action: () => app.search.open(e.clientX, e.clientY) },
      { label: "Add group", action: () => app.addGroup([at[0], at[1], 400, 300]) },
      { label: "Add group for selected nodes", disabled: !app.view.selected.size, action: () => app.groupSelected() },
      { separator: true },
      { label: "Paste", disabled: !app.clipboard.has(), action: () => app.clipboard.paste(at) },
      { label: "Select all", action: () => app.view.select([...app.graph.nodes.keys()]) },
      { label: "Fit view", action: () => app.view.fitView() },
      { separator: true },
      { label: "Undo", disabled: !app.history.canUndo(), action: () => app.history.undo() },
      { label: "Redo", disabled: !app.history.canRedo(), action: () => app.history.redo() },
    ]);
  }

  nodeMenu(e, node) {
    const app = this.app, g = app.graph;
    const targets = app.view.selected.has(node.id) ? app.view.selectedNodes() : [node];
    const setMode = (mode) => {
      const all = targets.every((n) => n.mode === mode);
      for (const n of targets) g.setMode(n.id, all ? MODE_ALWAYS : mode);
      app.commit();
    };
    const widgets = node.widgets.filter((w) => !w.control && !w.upload && !node.isConverted(w.name));
    const converted = node.inputs.filter((i) => i.widget);
    const items = [
      { label: "Rename", action: () => {
        const text = app.view.views.get(node.id)?.querySelector(".node-title-text");
        if (text) app.editText(text, node.title, (v) => { node.title = v || node.def?.displayName || node.type; text.textContent = node.title; app.commit(); });
      } },
      { label: node.mode === MODE_MUTED ? "Unmute" : "Mute", action: () => setMode(MODE_MUTED) },
      { label: node.mode === MODE_BYPASSED ? "Remove bypass" : "Bypass", action: () => setMode(MODE_BYPASSED) },
      { label: node.flags?.collapsed ? "Expand" : "Collapse", action: () => {
        for (const n of targets) { n.flags = { ...n.flags, collapsed: !node.flags?.collapsed }; app.view.refreshNode(n); }
        app.commit();
      } },
      { separator: true },
      { label: "Convert widget to input", disabled: !widgets.length, submenu: () => widgets.map((w) => ({
        label: `Convert ${w.name} to input`, action: () => { g.convertWidgetToInput(node.id, w.name); app.commit(); } })) },
      { label: "Convert input to widget", disabled: !converted.length, submenu: () => converted.map((i) => ({
        label: `Convert ${i.widget.name} to widget`, action: () => { g.convertInputToWidget(node.id, i.widget.name); app.commit(); } })) },
      { label: "Colors", submenu: () => [{ label: "No color", action: () => this.color(targets, null) },
        ...Object.entries(COLORS).map(([name, c]) => ({ label: name, action: () => this.color(targets, c) }))] },
      { separator: true },
      { label: "Copy", action: () => app.clipboard.copy() },
      { label: "Clone", action: () => app.clipboard.clone(targets) },
      { label: "Add group for selected nodes", action: () => app.groupSelected() },
      { label: "Remove", action: () => app.removeNodes(targets) },
    ];
    this.show(e.clientX, e.clientY, items);
  }

  color(nodes, c) {
    for (const n of nodes) {
      if (c) { n.extra.color = c; n.extra.bgcolor = c; } else { delete n.extra.color; delete n.extra.bgcolor; }
      this.app.view.refreshNode(n);
    }
    this.app.commit();
  }

  linkMenu(e, linkId) {
    const app = this.app, g = app.graph;
    const link = g.links.get(linkId);
    if (!link) return;
    const at = app.view.toWorld(e.clientX, e.clientY);
    this.show(e.clientX, e.clientY, [
      { label: "Add reroute", action: () => {
        const { origin_id, origin_slot, target_id, target_slot } = link;
        const name = g.getNode(target_id).inputs[target_slot].name;
        const rr = app.addNode(REROUTE, [at[0] - 45, at[1] - 13], false);
        g.connect(origin_id, origin_slot, rr.id, "");
        g.connect(rr.id, 0, target_id, name);
        app.commit();
      } },
      { label: "Delete link", action: () => { g.removeLink(linkId); app.commit(); } },
    ]);
  }

  groupMenu(e, index) {
    const app = this.app;
    const group = app.graph.groups[index];
    if (!group) return;
    this.show(e.clientX, e.clientY, [
      { label: "Rename", action: () => {
        const title = app.view.groupLayer.children[index]?.querySelector(".group-title");
        if (title) app.editText(title, group.title, (v) => { group.title = v || "Group"; app.view.renderGroups(); app.commit(); });
      } },
      { label: "Colors", submenu: () => Object.entries(COLORS).map(([name, c]) => ({ label: name,
        action: () => { group.color = c; app.view.renderGroups(); app.commit(); } })) },
      { label: "Select nodes in group", action: () => app.view.select(app.nodesInGroup(group).map((n) => n.id)) },
      { label: "Remove group", action: () => { app.graph.groups.splice(index, 1); app.view.renderGroups(); app.commit(); } },
    ]);
  }
}
