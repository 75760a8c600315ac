// Bootstrap: build the editor, then plug in the running panel (web/js/run) and packs' extensions when present.
// Either may be missing or fail; the editor keeps working without them.

import { App } from "./app.js";

async function optional(path, exportName, app) {
  let module;
  try {
    module = await import(path);
  } catch (err) {
    console.info(`${path} not loaded:`, err && err.message);
    return;
  }
  try {
    const fn = exportName === "default" ? module.default : module[exportName];
    if (typeof fn === "function") await fn(app);
  } catch (err) {
    console.error(`${path} failed to install:`, err);
  }
}

async function main() {
  const app = new App({
    canvasRoot: document.getElementById("graph-canvas"),
    toolbar: document.getElementById("toolbar"),
    sidePanel: document.getElementById("side-panel"),
  });
  window.tessera = app;
  await app.init();
  await optional("./run/index.js", "default", app);
  await optional("./extensions.js", "loadExtensions", app);
}

main().catch((err) => console.error("editor start-up failed:", err));
