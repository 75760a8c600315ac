// Canvas shortcuts. They apply only while focus is not in a text field, so typing in widgets never deletes nodes.

import { MODE_ALWAYS, MODE_BYPASSED, MODE_MUTED } from "../graph/graph.js";

function typing(target) {
  return !!target?.closest?.("input, textarea, select, [contenteditable='true']");
}

export function installKeyboard(app) {
  document.addEventListener("keydown", (e) => {
    if (typing(e.target) || app.search.isOpen) return;
    const mod = e.ctrlKey || e.metaKey;
    const key = e.key.toLowerCase();
    const view = app.view;
    const toggleMode = (mode) => {
      const nodes = view.selectedNodes();
      if (!nodes.length) return;
      const all = nodes.every((n) => n.mode === mode);
      for (const n of nodes) app.graph.setMode(n.id, all ? MODE_ALWAYS : mode);
      app.commit();
    };
    let handled = true;
    if (key === "delete" || key === "backspace") app.removeNodes(view.selectedNodes());
    else if (mod && key === "z" && !e.shiftKey) app.history.undo();
    else if (mod && (key === "y" || (key === "z" && e.shiftKey))) app.history.redo();
    else if (mod && key === "a") view.select([...app.graph.nodes.keys()]);
    else if (mod && key === "c") app.clipboard.copy();
    else if (mod && key === "x") { if (app.clipboard.copy()) app.removeNodes(view.selectedNodes()); }
    else if (mod && key === "v") app.clipboard.paste(undefined, e.shiftKey);
    else if (mod && key === "m") toggleMode(MODE_MUTED);
    else if (mod && key === "b") toggleMode(MODE_BYPASSED);
    else if (mod && key === "g") app.groupSelected();
    else if (mod && key === "s") app.workflow?.save();
    else if (mod && key === "o") app.workflow?.openDialog();
    else if (key === "escape") view.clearSelection();
    else if (key === "." && !mod) view.fitView();
    else handled = false;
    if (handled) e.preventDefault();
  });
}
