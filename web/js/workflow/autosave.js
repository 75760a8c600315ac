// Autosave: the current workflow goes to localStorage shortly after each change and is restored on the next start.

const KEY = "tessera.workflow";

export class Autosave {
  constructor(app, delay = 400) {
    this.app = app;
    this.delay = delay;
    this.timer = 0;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.saveNow(), this.delay);
  }

  saveNow() {
    clearTimeout(this.timer);
    this.timer = 0;
    try {
      localStorage.setItem(KEY, JSON.stringify(this.app.serializeWorkflow()));
      localStorage.setItem(`${KEY}.name`, this.app.workflowName || "workflow");
    } catch (err) {
      console.warn("autosave failed:", err);
    }
  }

  /** The saved workflow, or null. */
  load() {
    try {
      const text = localStorage.getItem(KEY);
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  }

  name() {
    try { return localStorage.getItem(`${KEY}.name`); } catch { return null; }
  }

  clear() {
    try { localStorage.removeItem(KEY); } catch { /* storage disabled */ }
  }
}
