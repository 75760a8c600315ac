// ComfyUI-compatible `api` for packs' JS (`import { api } from "../../scripts/api.js"`): the editor's own client
// (one websocket for the page), with missing members as harmless no-ops.

import { getApi } from "../js/run/api.js";
import { tolerant } from "./tolerant.js";

const client = getApi();

// ComfyUI names some members differently; these aliases keep common pack code working.
if (!("api_base" in client)) client.api_base = client.base;
if (!("initialClientId" in client)) client.initialClientId = client.clientId;

export const api = tolerant(client, "api");
export default api;
