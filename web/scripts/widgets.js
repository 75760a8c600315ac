// `ComfyWidgets` for packs that import it: widget factories we do not offer are no-ops (see tolerant.js).

import { tolerant } from "./tolerant.js";

export const ComfyWidgets = tolerant({}, "ComfyWidgets");
export default ComfyWidgets;
