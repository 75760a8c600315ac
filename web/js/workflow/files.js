// Workflow files: the toolbar's Load / Save / Export API buttons and examples menu, and dropping a .json or .png
// file on the canvas. Loading itself is app.loadFile / app.loadWorkflow.

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
      if (file) await this.app.loadFile(file).catch((e) => this.app.notify(e.message, "error"));
    });
    const newButton = button("new-button", "New", "Start an empty workflow");
    newButton.addEventListener("click", () => this.app.newWorkflow());
    const load = button("load-button", "Load", "Open a workflow (.json or a .png with an embedded workflow)");
    load.addEventListener("click", () => this.openDialog());
    const save = button("save-button", "Save", "Download the workflow (UI format)");
    save.addEventListener("click", () => this.save());
    const exportApi = button("export-api-button", "Export API", "Download the API-format prompt");
    exportApi.addEventListener("click", () => this.exportApi());
    const examples = button("examples-button", "Examples ▾", "Open an example workflow");
    examples.addEventListener("click", (e) => this.examplesMenu(e));
    group.append(newButton, load, save, exportApi, examples, this.fileInput);
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

  save() {
    download(this.fileName(".json"), this.app.serializeWorkflow());
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
    const items = names.length ? names.map((name) => ({ label: name, action: () => this.app.loadExample(name)
      .catch((err) => this.app.notify(err.message, "error")) })) : [{ label: "No examples", disabled: true }];
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
