// ComfyUI-compatible `api` for packs' JS (`import { api } from "../../scripts/api.js"`): the editor's own client
// (one websocket for the page), with missing members as harmless no-ops.

import { getApi } from "../js/run/api.js";
import { tolerant } from "./tolerant.js";

const client = getApi();

// ComfyUI names some members differently; these aliases keep common pack code working.
if (!("api_base" in client)) client.api_base = client.base;
if (!("initialClientId" in client)) client.initialClientId = client.clientId;

// Events whose `detail` ComfyUI's frontend hands to listeners in another shape than our client's messages:
// `executing` carries just the node id (null when the job ends).
const RESHAPE = {
  executing: (detail) => (detail && typeof detail === "object" ? (detail.display_node ?? detail.node ?? null) : detail),
};
const wrapped = new Map(); // type -> Map(listener -> wrapper)

function packListener(type, listener) {
  const reshape = RESHAPE[type];
  if (!reshape || typeof listener !== "function") return listener;
  if (!wrapped.has(type)) wrapped.set(type, new Map());
  const byListener = wrapped.get(type);
  if (!byListener.has(listener)) {
    byListener.set(listener, function (event) {
      return listener.call(this, new CustomEvent(type, { detail: reshape(event.detail) }));
    });
  }
  return byListener.get(listener);
}

const facade = tolerant(client, "api");
export const api = new Proxy(facade, {
  get(target, prop) {
    if (prop === "addEventListener") {
      return (type, listener, options) => client.addEventListener(type, packListener(type, listener), options);
    }
    if (prop === "removeEventListener") {
      return (type, listener, options) =>
        client.removeEventListener(type, wrapped.get(type)?.get(listener) ?? listener, options);
    }
    return Reflect.get(target, prop);
  },
});
export default api;
