// HTTP and websocket client for the wire contract of docs/architecture.md §4.1.
// One client per page (`getApi()`): the running panel and packs' `scripts/api.js` share its websocket, so events
// reach everyone and the server sees one clientId. Events are dispatched as CustomEvents named after the message
// type (`status`, `executing`, `progress`, ...); binary previews arrive as `b_preview` with {blob, nodeId, promptId}.

const CLIENT_ID_KEY = "tessera.clientId";
const PREVIEW_IMAGE = 1;
const PREVIEW_WITH_METADATA = 4;
const IMAGE_FORMATS = { 1: "image/jpeg", 2: "image/png" };

function newClientId() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

function storedClientId() {
  try {
    let id = sessionStorage.getItem(CLIENT_ID_KEY);
    if (!id) {
      id = newClientId();
      sessionStorage.setItem(CLIENT_ID_KEY, id);
    }
    return id;
  } catch {
    return newClientId(); // storage may be disabled; a fresh id per page is fine
  }
}

/** Split a binary websocket frame into {blob, nodeId, promptId}; null for frame types we do not know. */
export function decodePreviewFrame(buffer) {
  const view = new DataView(buffer);
  if (buffer.byteLength < 8) return null;
  const kind = view.getUint32(0);
  if (kind === PREVIEW_IMAGE) {
    const mime = IMAGE_FORMATS[view.getUint32(4)] || "image/jpeg";
    return { blob: new Blob([buffer.slice(8)], { type: mime }), nodeId: null, promptId: null };
  }
  if (kind === PREVIEW_WITH_METADATA) {
    const length = view.getUint32(4);
    let meta = {};
    try {
      meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, length)));
    } catch {
      meta = {};
    }
    const mime = meta.image_type || "image/jpeg";
    return {
      blob: new Blob([buffer.slice(8 + length)], { type: mime }),
      nodeId: meta.display_node_id ?? meta.node_id ?? null,
      promptId: meta.prompt_id ?? null,
    };
  }
  return null;
}

export class TesseraApi extends EventTarget {
  constructor({ base = "", clientId = null } = {}) {
    super();
    this.base = base;
    this.clientId = clientId || storedClientId();
    this.socket = null;
    this.connected = false;
    this.retryDelay = 300;
    this._retryTimer = null;
    this._wantSocket = false;
    this._everConnected = false;
  }

  apiURL(path) {
    return `${this.base}/api${path}`;
  }

  fileURL(path) {
    return `${this.base}${path}`;
  }

  /** fetch() against the API prefix (ComfyUI's `api.fetchApi` signature). */
  fetchApi(path, options = {}) {
    return fetch(this.apiURL(path), { cache: "no-store", ...options });
  }

  async getJSON(path) {
    const response = await this.fetchApi(path);
    if (!response.ok) throw new Error(`GET ${path}: HTTP ${response.status}`);
    return response.json();
  }

  /** POST a JSON body; resolves to {ok, status, body} and never throws on HTTP errors. */
  async postJSON(path, body) {
    const response = await this.fetchApi(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body ?? {}),
    });
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    return { ok: response.ok, status: response.status, body: parsed };
  }

  queuePrompt(prompt, workflow, { front = false } = {}) {
    // the server sends no step previews unless a job asks (API clients read binary frames as results)
    const body = { prompt, client_id: this.clientId,
                   extra_data: { extra_pnginfo: { workflow }, preview_method: "auto" } };
    if (front) body.front = true;
    return this.postJSON("/prompt", body);
  }

  getQueue() {
    return this.getJSON("/queue");
  }

  getHistory(maxItems = 50) {
    return this.getJSON(`/history?max_items=${maxItems}`);
  }

  deleteQueued(promptIds) {
    return this.postJSON("/queue", { delete: promptIds });
  }

  deleteHistory(promptIds) {
    return this.postJSON("/history", { delete: promptIds });
  }

  clearHistory() {
    return this.postJSON("/history", { clear: true });
  }

  interrupt(promptId = null) {
    return this.postJSON("/interrupt", promptId ? { prompt_id: promptId } : {});
  }

  /** URL of an output/input/temp file as described in history outputs ({filename, subfolder, type}). */
  viewURL(image) {
    const params = new URLSearchParams({
      filename: image.filename,
      subfolder: image.subfolder || "",
      type: image.type || "output",
    });
    return this.apiURL(`/view?${params}`);
  }

  // -- websocket ----------------------------------------------------------------------------------------------------
  connect() {
    this._wantSocket = true;
    if (this.socket && this.socket.readyState <= WebSocket.OPEN) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const host = this.base ? new URL(this.base, location.href).host : location.host;
    const socket = new WebSocket(`${scheme}//${host}/ws?clientId=${encodeURIComponent(this.clientId)}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.connected = true;
      this.retryDelay = 300;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this._emit(this._everConnected ? "reconnected" : "connected", {});
      this._everConnected = true;
    });
    socket.addEventListener("message", (event) => this._onMessage(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.connected = false;
      this.socket = null;
      if (!this._wantSocket) return;
      this._emit("reconnecting", { delay: this.retryDelay });
      this._retryTimer = setTimeout(() => this.connect(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    });
  }

  disconnect() {
    this._wantSocket = false;
    clearTimeout(this._retryTimer);
    if (this.socket) this.socket.close();
    this.socket = null;
    this.connected = false;
  }

  _onMessage(data) {
    if (typeof data !== "string") {
      const preview = decodePreviewFrame(data);
      if (preview) this._emit("b_preview", preview);
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (!message || typeof message.type !== "string") return;
    if (message.type === "status" && message.data && message.data.sid) this.clientId = message.data.sid;
    this._emit(message.type, message.data ?? {});
  }

  _emit(type, detail) {
    try {
      this.dispatchEvent(new CustomEvent(type, { detail }));
    } catch (error) {
      console.error(`a listener for "${type}" failed`, error); // one bad listener must not stop the others
    }
  }
}

let shared = null;

/** The page's one client (created on first use; the websocket opens only when someone calls connect()). */
export function getApi() {
  if (!shared) shared = new TesseraApi();
  return shared;
}
