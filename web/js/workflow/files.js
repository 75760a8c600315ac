// Workflow files: the toolbar's New / Open / Save / Workflows / Download / Export API buttons and examples menu, and
// dropping a .json or .png file on the canvas. Loading itself is app.loadFile / app.loadWorkflow.
//
// Saved workflows live on the server, in the user's data (`workflows/<name>.json` through /api/userdata), the same
// folder ComfyUI's official frontend uses, so both editors see the same files. Opening anything over a graph with
// unsaved changes asks first.

function download(name, data) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function button(id, label, title) {
  const b = document.createElement("button");
  if (id) b.id = id;
  b.className = "toolbar-button";
  b.textContent = label;
  if (title) b.title = title;
  return b;
}

export class WorkflowFiles {
  constructor(app) {
    this.app = app;
    const bar = app.toolbar;
    const group = document.createElement("div");
    group.className = "toolbar-group workflow-controls";
    this.fileInput = document.createElement("input");
    this.fileInput.type = "file";
    this.fileInput.id = "load-file";
    this.fileInput.accept = ".json,.png,application/json,image/png";
    this.fileInput.hidden = true;
    this.fileInput.addEventListener("change", async () => {
      const file = this.fileInput.files && this.fileInput.files[0];
      this.fileInput.value = "";
      if (file && this.app.confirmReplace(`"${file.name}"`)) {
        await this.app.loadFile(file).then(() => { this.app.savedPath = null; })
          .catch((e) => this.app.notify(e.message, "error"));
      }
    });
    const newButton = button("new-button", "New", "Start an empty workflow");
    newButton.addEventListener("click", () => { if (this.app.confirmReplace("a new workflow")) this.app.newWorkflow(); });
    const load = button("load-button", "Load", "Open a workflow file (.json or a .png with an embedded workflow)");
    load.addEventListener("click", () => this.openDialog());
    const save = button("save-button", "Save", "Save the workflow on the server (Ctrl+S)");
    save.addEventListener("click", () => this.save());
    const saved = button("workflows-button", "Workflows ▾", "Open, rename or delete saved workflows");
    saved.addEventListener("click", (e) => this.workflowsMenu(e));
    const downloadButton = button("download-button", "Download", "Download the workflow (UI format)");
    downloadButton.addEventListener("click", () => this.download());
    const exportApi = button("export-api-button", "Export API", "Download the API-format prompt");
    exportApi.addEventListener("click", () => this.exportApi());
    const examples = button("examples-button", "Examples ▾", "Open an example workflow");
    examples.addEventListener("click", (e) => this.examplesMenu(e));
    group.append(newButton, load, save, saved, downloadButton, exportApi, examples, this.fileInput);
    bar.append(group);
    this.installDrop(app.canvasRoot);
  }

  openDialog() {
    this.fileInput.click();
  }

  fileName(ext) {
    const base = (this.app.workflowName || "workflow").replace(/[^\w.-]+/g, "_");
    return `${base}${ext}`;
  }

  download() {
    download(this.fileName(".json"), this.app.serializeWorkflow());
  }

  // ---- workflows saved on the server (the user's data, workflows/)

  async request(method, path, query = "", body = undefined) {
    const response = await fetch(`/api/userdata/${encodeURIComponent(path)}${query}`, { method, body,
      headers: body === undefined ? {} : { "Content-Type": "application/json" } });
    return response;
  }

  /** Save under a name asked for (the current one proposed); asks before overwriting another workflow. */
  async save() {
    const current = this.app.savedPath ? this.app.workflowName : "";
    const name = (window.prompt("Save workflow as:", current || this.app.workflowName || "workflow") || "").trim();
    if (!name) return false;
    const path = `workflows/${name.replace(/\.json$/i, "")}.json`;
    const body = JSON.stringify(this.app.serializeWorkflow());
    let response = await this.request("POST", path, "?overwrite=false&full_info=true", body);
    if (response.status === 409) {
      if (path !== this.app.savedPath && !window.confirm(`A workflow named "${name}" exists. Replace it?`)) return false;
      response = await this.request("POST", path, "?overwrite=true&full_info=true", body);
    }
    if (!response.ok) {
      this.app.notify(`Could not save "${name}": HTTP ${response.status} ${await response.text()}`, "error");
      return false;
    }
    this.app.savedPath = path;
    this.app.workflowName = name.replace(/\.json$/i, "");
    this.app.modified = false;
    this.app.autosave.schedule();
    this.app.notify(`Saved "${this.app.workflowName}"`, "info");
    this.app.emit("workflow-saved", path);
    return true;
  }

  /** The saved workflows' names (paths under workflows/ without .json), sorted. */
  async listSaved() {
    const response = await fetch("/api/userdata?dir=workflows&recurse=true", { cache: "no-store" });
    if (response.status === 404) return [];
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const files = await response.json();
    return files.filter((f) => /\.json$/i.test(f) && !f.split("/").pop().startsWith("."))
      .map((f) => f.replace(/\.json$/i, "")).sort((a, b) => a.localeCompare(b));
  }

  async openSaved(name) {
    if (!this.app.confirmReplace(`"${name}"`)) return;
    const path = `workflows/${name}.json`;
    const response = await this.request("GET", path);
    if (!response.ok) throw new Error(`"${name}" could not be read: HTTP ${response.status}`);
    this.app.loadWorkflow(await response.json(), name);
    this.app.savedPath = path;
  }

  async renameSaved() {
    const from = this.app.savedPath;
    if (!from) return;
    const name = (window.prompt("Rename workflow to:", this.app.workflowName) || "").trim();
    if (!name || `workflows/${name}.json` === from) return;
    const to = `workflows/${name.replace(/\.json$/i, "")}.json`;
    const response = await fetch(`/api/userdata/${encodeURIComponent(from)}/move/${encodeURIComponent(to)}?overwrite=false`,
      { method: "POST" });
    if (!response.ok) {
      this.app.notify(response.status === 409 ? `A workflow named "${name}" exists already` :
        `Could not rename: HTTP ${response.status}`, "error");
      return;
    }
    this.app.savedPath = to;
    this.app.workflowName = name.replace(/\.json$/i, "");
    this.app.autosave.schedule();
    this.app.notify(`Renamed to "${this.app.workflowName}"`, "info");
  }

  async deleteSaved() {
    const path = this.app.savedPath;
    if (!path || !window.confirm(`Delete the saved workflow "${this.app.workflowName}" from the server?`)) return;
    const response = await this.request("DELETE", path);
    if (!response.ok && response.status !== 404) {
      this.app.notify(`Could not delete: HTTP ${response.status}`, "error");
      return;
    }
    this.app.savedPath = null;
    this.app.modified = true; // the graph is still here, now unsaved
    this.app.notify(`Deleted "${this.app.workflowName}"`, "info");
  }

  async workflowsMenu(e) {
    const r = e.currentTarget.getBoundingClientRect();
    let names = [];
    try {
      names = await this.listSaved();
    } catch (err) {
      this.app.notify(`Cannot list saved workflows: ${err.message}`, "error");
      return;
    }
    const open = names.length ? names.map((name) => ({ label: name, type: "saved-workflow",
      action: () => this.openSaved(name).catch((err) => this.app.notify(err.message, "error")) }))
      : [{ label: "No saved workflows", disabled: true }];
    const current = !this.app.savedPath;
    this.app.menus.show(r.left, r.bottom + 2, [...open, { separator: true },
      { label: "Rename current…", disabled: current, action: () => this.renameSaved() },
      { label: "Delete current…", disabled: current, action: () => this.deleteSaved() }]);
  }

  exportApi() {
    try {
      download(this.fileName(".api.json"), this.app.toApiPrompt().prompt);
    } catch (e) {
      this.app.notify(`Cannot export: ${e.message}`, "error");
    }
  }

  async examplesMenu(e) {
    const r = e.currentTarget.getBoundingClientRect();
    let names = [];
    try {
      names = await this.app.listExamples();
    } catch (err) {
      this.app.notify(`Cannot list examples: ${err.message}`, "error");
      return;
    }
    const items = names.length ? names.map((name) => ({ label: name, action: () => {
      if (!this.app.confirmReplace(`the example "${name}"`)) return;
      this.app.loadExample(name).then(() => { this.app.savedPath = null; })
        .catch((err) => this.app.notify(err.message, "error"));
    } })) : [{ label: "No examples", disabled: true }];
    this.app.menus.show(r.left, r.bottom + 2, items);
  }

  installDrop(target) {
    target.addEventListener("dragover", (e) => {
      if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) {
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        target.classList.add("drop-target");
      }
    });
    target.addEventListener("dragleave", () => target.classList.remove("drop-target"));
    target.addEventListener("drop", async (e) => {
      target.classList.remove("drop-target");
      const file = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (!file) return;
      e.preventDefault();
      try {
        await this.app.loadFile(file);
      } catch (err) {
        if (err.noWorkflow && this.app.defs.has("LoadImage")) {
          this.app.view.rect = this.app.canvasRoot.getBoundingClientRect();
          const node = this.app.addNode("LoadImage", this.app.view.toWorld(e.clientX, e.clientY), false);
          const upload = node.widgets.find((w) => w.upload);
          if (upload) await this.app.uploadImage(node, upload, file);
          else this.app.commit();
        } else {
          this.app.notify(err.message, "error");
        }
      }
    });
  }
}
