// Running the graph from the editor: wires the api client, queue controls, progress display and error display to
// the editor core's app object (web/js/main.js calls installRunning(app) once the app exists).

import { getApi } from "./api.js";
import { ErrorDisplay } from "./errors.js";
import { ProgressTracker } from "./progress.js";
import { QueueControls } from "./queue.js";

function addStylesheet() {
  if (document.getElementById("run-css")) return;
  const link = document.createElement("link");
  link.id = "run-css";
  link.rel = "stylesheet";
  link.href = new URL("./run.css", import.meta.url).href;
  document.head.append(link);
}

export default function installRunning(app) {
  addStylesheet();
  const run = { app, api: getApi() };
  run.queue = new QueueControls(app, run);
  run.progress = new ProgressTracker(app, run);
  run.errors = new ErrorDisplay(app, run);
  app.running = run;
  run.api.addEventListener("status", () => run.queue.scheduleRefresh());
  run.api.addEventListener("reconnected", () => run.queue.scheduleRefresh());
  run.api.addEventListener("reconnecting", () => document.body.classList.add("disconnected"));
  for (const type of ["connected", "reconnected"]) {
    run.api.addEventListener(type, () => document.body.classList.remove("disconnected"));
  }
  run.api.connect();
  run.queue.refresh();
  // without a websocket there are no `status` events: poll the queue instead until it is back
  setInterval(() => {
    if (!run.api.connected) run.queue.refresh();
  }, 2000);
  return run;
}

export { installRunning };
