// Loads custom node packs' JS (GET /extensions → dynamic import of each URL). Each import runs inside try/catch with
// a time limit, and errors thrown later from pack code are logged, so no pack can stop the editor from working.

import { app as compatApp } from "../scripts/app.js";

const IMPORT_TIMEOUT_MS = 5000;

function fromExtension(text) {
  return typeof text === "string" && text.includes("/extensions/");
}

let guardInstalled = false;

/** Errors thrown later by pack code (timers, event handlers): logged, never shown as editor failures. */
function installErrorGuard(record) {
  if (guardInstalled) return;
  guardInstalled = true;
  window.addEventListener("error", (event) => {
    if (fromExtension(event.filename) || fromExtension(event.error && event.error.stack)) {
      record({ url: event.filename, phase: "runtime", message: String(event.message) });
      event.preventDefault();
    }
  });
  window.addEventListener("unhandledrejection", (event) => {
    const reason = event.reason;
    if (fromExtension(reason && reason.stack)) {
      record({ url: null, phase: "runtime", message: String((reason && reason.message) || reason) });
      event.preventDefault();
    }
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Import every pack script; resolves to [{url, ok, error?}] once their extensions' hooks have run. */
export async function loadExtensions(app) {
  const results = [];
  const errors = [];
  app.extensionResults = results;
  app.extensionErrors = errors;
  installErrorGuard((entry) => errors.push(entry));
  compatApp.errors = errors; // hook failures land in the same list
  compatApp.attach(app);
  let urls = [];
  try {
    const response = await fetch("/api/extensions", { cache: "no-store" });
    urls = response.ok ? await response.json() : [];
  } catch (error) {
    console.warn("could not list extensions", error);
  }
  for (const url of Array.isArray(urls) ? urls : []) {
    if (typeof url !== "string" || !url.endsWith(".js")) continue;
    try {
      await withTimeout(import(url), IMPORT_TIMEOUT_MS, `importing ${url}`);
      results.push({ url, ok: true });
    } catch (error) {
      console.warn(`extension ${url} failed to load`, error);
      results.push({ url, ok: false, error: String((error && error.message) || error) });
      errors.push({ url, phase: "import", message: String((error && error.message) || error) });
    }
  }
  try {
    await withTimeout(compatApp.whenIdle(), IMPORT_TIMEOUT_MS, "extension setup hooks");
  } catch (error) {
    console.warn(error);
  }
  document.body.dataset.extensions = "loaded";
  return results;
}

export default loadExtensions;
