// Copy, paste and clone of nodes. The clipboard holds the saved form of the selected nodes and their links, kept
// in localStorage too so it survives a reload and works between tabs. Ctrl+Shift+V also keeps links that came
// into the copied nodes from nodes that were not copied.

import { mergeUiNodes, serializeGraph } from "../graph/ui_format.js";

const KEY = "tessera.clipboard";

export class Clipboard {
  constructor(app) {
    this.app = app;
    this.data = null;
  }

  has() {
    if (this.data) return true;
    try { return !!localStorage.getItem(KEY); } catch { return false; }
  }

  /** The saved form of `nodes`: their entries plus every link that ends at one of them. */
  capture(nodes) {
    const ids = new Set(nodes.map((n) => String(n.id)));
    const all = serializeGraph(this.app.graph);
    return {
      nodes: all.nodes.filter((n) => ids.has(String(n.id))),
      links: all.links.filter((l) => ids.has(String(l[3]))),
    };
  }

  copy(nodes = this.app.view.selectedNodes()) {
    if (!nodes.length) return false;
    this.app.view.syncSizes();
    this.data = this.capture(nodes);
    try { localStorage.setItem(KEY, JSON.stringify(this.data)); } catch { /* storage full or disabled */ }
    return true;
  }

  /** Paste with the top-left of the copied nodes at world point `at`; the pasted nodes become the selection. */
  paste(at = this.app.interaction.pointerWorld(), keepInputs = false) {
    let data = this.data;
    if (!data) {
      try { data = JSON.parse(localStorage.getItem(KEY) || "null"); } catch { data = null; }
    }
    if (!data || !data.nodes?.length) return [];
    const x0 = Math.min(...data.nodes.map((n) => n.pos[0])), y0 = Math.min(...data.nodes.map((n) => n.pos[1]));
    const created = mergeUiNodes(this.app.graph, structuredClone(data.nodes), data.links, [at[0] - x0, at[1] - y0], keepInputs);
    const nodes = [...created.values()];
    this.app.view.select(nodes.map((n) => n.id));
    this.app.commit();
    return nodes;
  }

  clone(nodes) {
    if (!nodes.length) return [];
    const data = this.capture(nodes);
    const created = mergeUiNodes(this.app.graph, data.nodes, data.links, [30, 30], false);
    this.app.view.select([...created.values()].map((n) => n.id));
    this.app.commit();
    return [...created.values()];
  }
}
