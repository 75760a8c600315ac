// Errors where the user can act on them: validation errors from POST /prompt on the offending nodes and inputs,
// prompt-level errors and execution errors in #error-dialog (execution errors also on their node).

function describe(error) {
  const details = error.details && error.details !== error.message ? `: ${error.details}` : "";
  return `${error.message || error.type || "error"}${details}`;
}

export class ErrorDisplay {
  constructor(app, run) {
    this.app = app;
    this.run = run;
    this.dialog = this.buildDialog();
    run.api.addEventListener("execution_error", (event) => this.showExecutionError(event.detail || {}));
  }

  buildDialog() {
    const dialog = document.createElement("div");
    dialog.id = "error-dialog";
    dialog.setAttribute("role", "alert");
    dialog.hidden = true;
    const head = document.createElement("div");
    head.className = "error-head";
    this.dialogTitle = document.createElement("strong");
    const close = document.createElement("button");
    close.className = "small close";
    close.textContent = "×";
    close.title = "Dismiss";
    close.addEventListener("click", () => this.clearDialog());
    head.append(this.dialogTitle, close);
    this.dialogBody = document.createElement("pre");
    this.dialogBody.className = "error-body";
    dialog.append(head, this.dialogBody);
    document.body.append(dialog);
    return dialog;
  }

  showDialog(title, body) {
    this.dialogTitle.textContent = title;
    this.dialogBody.textContent = body || "";
    this.dialog.hidden = false;
  }

  clearDialog() {
    this.dialog.hidden = true;
  }

  /** node_errors of a /prompt response → error on each node, with per-input messages from extra_info.input_name. */
  showNodeErrors(nodeErrors) {
    let count = 0;
    for (const [id, entry] of Object.entries(nodeErrors || {})) {
      const errors = entry.errors || [];
      if (!errors.length) continue;
      const inputs = {};
      for (const error of errors) {
        const name = error.extra_info && error.extra_info.input_name;
        if (name) inputs[name] = inputs[name] ? `${inputs[name]}; ${describe(error)}` : describe(error);
      }
      this.run.progress.setStatus(id, { error: { message: errors.map(describe).join("\n"), inputs } });
      count++;
    }
    return count;
  }

  /** A rejected POST /prompt (HTTP 400): errors on the nodes plus the prompt-level message in the dialog. */
  showPromptErrors(body, status) {
    const error = (body && body.error) || { message: `the server answered HTTP ${status}` };
    const marked = this.showNodeErrors(body && body.node_errors);
    const title = typeof error === "string" ? error : describe(error);
    const hint = marked ? `${marked} node${marked > 1 ? "s have" : " has"} errors; they are marked on the canvas.` : "";
    this.showDialog(title, hint);
  }

  /** execution_error from the websocket: the failing node gets the message; the dialog carries the traceback. */
  showExecutionError(data) {
    const message = `${data.exception_type || "Error"}: ${data.exception_message || ""}`;
    if (data.node_id != null) this.run.progress.setStatus(data.node_id, { error: { message } });
    const where = data.node_id != null ? ` in node ${data.node_id} (${data.node_type || "?"})` : "";
    const trace = Array.isArray(data.traceback) ? data.traceback.join("\n") : String(data.traceback || "");
    this.showDialog(`Execution failed${where}`, `${message}\n\n${trace}`.trim());
  }
}
