// Text chunks of a PNG file (tEXt, iTXt, zTXt): where editors embed the "workflow" (UI format) and "prompt" (API).

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

function decodeText(bytes) {
  try { return new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch { return new TextDecoder("latin1").decode(bytes); }
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** {keyword: text} for every text chunk of the PNG in `buffer` (ArrayBuffer); throws when it is not a PNG. */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(buffer);
  const out = {};
  let pos = 8;
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    pos += 12 + length;
    if (type === "IEND") break;
    if (type !== "tEXt" && type !== "iTXt" && type !== "zTXt") continue;
    const zero = data.indexOf(0);
    if (zero < 0) continue;
    const keyword = new TextDecoder("latin1").decode(data.subarray(0, zero));
    try {
      if (type === "tEXt") {
        out[keyword] = decodeText(data.subarray(zero + 1));
      } else if (type === "zTXt") {
        out[keyword] = decodeText(await inflate(data.subarray(zero + 2)));
      } else {
        const compressed = data[zero + 1] === 1;
        let p = zero + 3;
        p = data.indexOf(0, p) + 1; // language tag
        p = data.indexOf(0, p) + 1; // translated keyword
        const text = data.subarray(p);
        out[keyword] = new TextDecoder("utf-8").decode(compressed ? await inflate(text) : text);
      }
    } catch { /* a broken chunk is skipped; the others may still hold the workflow */ }
  }
  return out;
}
