// Undo/redo as snapshots of the saved workflow, taken after each committed change: simple, and correct for every
// kind of edit (including ones made by extensions) because restoring is just loading.

const LIMIT = 60;

export class History {
  constructor(app) {
    this.app = app;
    this.stack = [];
    this.index = -1;
  }

  /** Forget everything and start from the current graph (after loading a workflow). */
  reset() {
    this.stack = [this.snapshot()];
    this.index = 0;
  }

  snapshot() {
    const wf = this.app.serializeWorkflow(false);
    delete wf.extra?.ds; // panning is not an edit
    return JSON.stringify(wf);
  }

  /** Record the current graph if it differs from the last snapshot; returns true when it did. */
  record() {
    const snap = this.snapshot();
    if (this.stack[this.index] === snap) return false;
    this.stack.length = this.index + 1;
    this.stack.push(snap);
    if (this.stack.length > LIMIT) this.stack.shift();
    this.index = this.stack.length - 1;
    return true;
  }

  canUndo() {
    return this.index > 0;
  }

  canRedo() {
    return this.index < this.stack.length - 1;
  }

  undo() {
    if (!this.canUndo()) return false;
    this.index--;
    this.restore();
    return true;
  }

  redo() {
    if (!this.canRedo()) return false;
    this.index++;
    this.restore();
    return true;
  }

  restore() {
    this.app.restoreSnapshot(JSON.parse(this.stack[this.index]));
  }
}
