// Queue controls and the queue/history panel: the Queue button posts the graph N times, the panel lists running,
// pending and finished jobs with cancel/delete, and refreshes whenever the server broadcasts `status`.

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node) node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

export class QueueControls {
  /** `run` is the RunState of index.js: it knows the api client, errors and progress trackers. */
  constructor(app, run) {
    this.app = app;
    this.run = run;
    this.api = run.api;
    this._refreshTimer = null;
    this._refreshing = null;
    this.buildToolbar();
    this.buildPanel();
  }

  buildToolbar() {
    const bar = this.app.toolbar || document.body;
    this.batch = el("input", {
      id: "batch-count", type: "number", min: "1", max: "100", step: "1", value: "1",
      title: "How many times to queue the graph (seeds advance between runs per control_after_generate)",
    });
    this.queueButton = el("button", { id: "queue-button", className: "run-button primary", textContent: "Queue",
                                      title: "Queue the graph (Ctrl+Enter)", onclick: () => this.queue() });
    this.interruptButton = el("button", { id: "interrupt-button", className: "run-button", textContent: "Interrupt",
                                          title: "Stop the running job", onclick: () => this.interrupt() });
    const progress = el("div", { id: "overall-progress-track", title: "Progress of the running job" },
                        [el("div", { id: "overall-progress" })]);
    progress.firstChild.style.width = "0%";
    this.status = el("span", { id: "queue-status", textContent: "" });
    bar.append(el("div", { className: "run-controls" },
                  [this.queueButton, el("label", { className: "batch-label", textContent: "×" }), this.batch,
                   this.interruptButton, progress, this.status]));
    document.addEventListener("keydown", (event) => {
      if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
        event.preventDefault();
        this.queue();
      }
    });
  }

  buildPanel() {
    const side = this.app.sidePanel || document.body;
    this.runningList = el("div", { className: "queue-list running" });
    this.pendingList = el("div", { className: "queue-list pending" });
    this.historyList = el("div", { className: "queue-list history" });
    const clearHistory = el("button", { className: "small", textContent: "Clear", title: "Delete all history",
                                        onclick: async () => { await this.api.clearHistory(); this.refresh(); } });
    this.panel = el("section", { id: "queue-panel", className: "run-panel" }, [
      el("h3", { textContent: "Queue" }), this.runningList, this.pendingList,
      el("h3", {}, [el("span", { textContent: "History" }), clearHistory]), this.historyList,
    ]);
    side.append(this.panel);
  }

  batchCount() {
    const n = Math.floor(Number(this.batch.value));
    return Number.isFinite(n) && n >= 1 ? Math.min(n, 100) : 1;
  }

  /** Post the graph batch-count times; stop at the first rejection and show its errors on the nodes. */
  async queue() {
    const count = this.batchCount();
    this.queueButton.disabled = true;
    try {
      this.app.clearNodeStatus();
      this.run.errors.clearDialog();
      for (let i = 0; i < count; i++) {
        let converted;
        try {
          converted = this.app.toApiPrompt();
        } catch (error) {
          this.run.errors.showDialog("The graph cannot be converted to a prompt", String(error?.message || error));
          return false;
        }
        const { prompt, workflow } = converted;
        const result = await this.api.queuePrompt(prompt, workflow);
        if (!result.ok) {
          this.run.errors.showPromptErrors(result.body, result.status);
          return false;
        }
        this.run.errors.showNodeErrors(result.body?.node_errors); // outputs that were dropped, if any
        this.run.progress.expect(result.body.prompt_id, prompt);
        try {
          this.app.afterQueued();
        } catch (error) {
          console.error("afterQueued failed", error);
        }
      }
      return true;
    } catch (error) {
      this.run.errors.showDialog("Could not reach the server", String(error?.message || error));
      return false;
    } finally {
      this.queueButton.disabled = false;
      this.refresh();
    }
  }

  async interrupt() {
    await this.api.interrupt();
    this.refresh();
  }

  /** Coalesce bursts of `status` events into one refresh. */
  scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => this.refresh(), 50);
  }

  async refresh() {
    if (this._refreshing) {
      this._again = true;
      return this._refreshing;
    }
    this._refreshing = (async () => {
      try {
        const [queue, history] = await Promise.all([this.api.getQueue(), this.api.getHistory(50)]);
        this.render(queue, history);
      } catch (error) {
        console.warn("queue refresh failed", error);
      } finally {
        this._refreshing = null;
        if (this._again) {
          this._again = false;
          this.refresh();
        }
      }
    })();
    return this._refreshing;
  }

  render(queue, history) {
    const running = queue.queue_running || [];
    const pending = [...(queue.queue_pending || [])].sort((a, b) => a[0] - b[0]);
    this.runningList.replaceChildren(...running.map((item) => this.queueItem(item, true)));
    this.pendingList.replaceChildren(...pending.map((item) => this.queueItem(item, false)));
    const entries = Object.entries(history || {}).reverse(); // newest first
    this.historyList.replaceChildren(...entries.map(([id, entry]) => this.historyItem(id, entry)));
    this.status.textContent = running.length + pending.length ? `${running.length + pending.length} in queue` : "";
  }

  queueItem(item, isRunning) {
    const [number, promptId] = item;
    const cancel = el("button", {
      className: "small cancel", textContent: isRunning ? "Stop" : "Cancel",
      title: isRunning ? "Interrupt this job" : "Remove this job from the queue",
      onclick: async () => {
        if (isRunning) await this.api.interrupt(promptId);
        else await this.api.deleteQueued([promptId]);
        this.refresh();
      },
    });
    return el("div", { className: `queue-item${isRunning ? " running" : ""}`, dataset: { promptId } }, [
      el("span", { className: "item-label", textContent: `#${number} ${isRunning ? "running" : "pending"}` }),
      el("code", { textContent: String(promptId).slice(0, 8) }), cancel,
    ]);
  }

  historyItem(promptId, entry) {
    const status = entry.status || {};
    const images = Object.values(entry.outputs || {}).flatMap((output) => output.images || []);
    const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
    const children = [
      el("span", { className: "item-label", textContent: `#${entry.prompt?.[0] ?? "?"} ${status.status_str || ""}` }),
    ];
    if (images.length) {
      children.push(el("img", { className: "history-thumb", src: this.api.viewURL(images[0]), alt: "output" }));
    }
    if (workflow) {
      children.push(el("button", { className: "small load", textContent: "Load", title: "Load this job's workflow",
                                   onclick: () => {
                                     if (this.app.confirmReplace("this job's workflow")) this.app.loadWorkflow(workflow);
                                   } }));
    }
    children.push(el("button", {
      className: "small delete", textContent: "Delete", title: "Delete from history",
      onclick: async () => { await this.api.deleteHistory([promptId]); this.refresh(); },
    }));
    return el("div", { className: `history-item ${status.status_str || ""}`, dataset: { promptId } }, children);
  }
}
