// Read the A1111 `parameters` text chunk of a PNG in the browser (what ldmkit, A1111 and others write),
// and turn it into form settings. Nothing is uploaded.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const MAX_FILE = 64 * 1024 * 1024;
const MAX_TEXT = 1024 * 1024;

function latin1(bytes) {
  let out = "";
  for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return out;
}

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_TEXT) {  // a compressed text chunk can expand a lot: stop early
      await reader.cancel();
      throw new Error("the text chunk is over 1 MiB");
    }
    parts.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** The `parameters` text of a PNG file, or null when it has none; Error when it is not a PNG. */
export async function pngParameters(file) {
  if (file.size > MAX_FILE) throw new Error("the file is over 64 MiB");
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 8;
  while (pos + 12 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = latin1(bytes.subarray(pos + 4, pos + 8));
    const start = pos + 8;
    const end = start + length;
    if (end + 4 > bytes.length) throw new Error("the PNG is truncated");
    const data = bytes.subarray(start, end);
    const nul = data.indexOf(0);
    const key = nul > 0 ? latin1(data.subarray(0, nul)) : "";
    if (key === "parameters" && type === "tEXt") return latin1(data.subarray(nul + 1));
    if (key === "parameters" && type === "zTXt") return latin1(await inflate(data.subarray(nul + 2)));
    if (key === "parameters" && type === "iTXt") {
      const compressed = data[nul + 1] === 1;
      let at = nul + 3;
      at = data.indexOf(0, at) + 1;  // language tag
      at = data.indexOf(0, at) + 1;  // translated keyword
      if (at <= 0) throw new Error("a malformed iTXt chunk");
      const text = data.subarray(at);
      return new TextDecoder("utf-8").decode(compressed ? await inflate(text) : text);
    }
    if (type === "IEND") break;
    pos = end + 4;
  }
  return null;
}

/** The A1111 text as {prompt, negative_prompt, fields: {"Steps": "20", ...}}. */
export function parseParameters(text) {
  const lines = text.split("\n");
  let fieldLine = "";
  if (lines.length > 1 && /(^|, )Steps: /.test(lines[lines.length - 1])) fieldLine = lines.pop();
  const neg = lines.findIndex((l) => l.startsWith("Negative prompt: "));
  const prompt = (neg < 0 ? lines : lines.slice(0, neg)).join("\n");
  const negative = neg < 0 ? "" : [lines[neg].slice("Negative prompt: ".length), ...lines.slice(neg + 1)].join("\n");
  const fields = {};
  for (const part of fieldLine.split(", ")) {
    const at = part.indexOf(": ");
    if (at > 0) fields[part.slice(0, at)] = part.slice(at + 2);
  }
  return {prompt, negative_prompt: negative, fields};
}

/** Form settings from parsed parameters (only the fields that are there). */
export function settingsOf(parsed) {
  const f = parsed.fields;
  const out = {prompt: parsed.prompt, negative_prompt: parsed.negative_prompt};
  if (f.Steps) out.steps = f.Steps;
  if (f.Sampler) out.sampler = f.Sampler;
  if (f["CFG scale"]) out.guidance = f["CFG scale"];
  if (f["CFG rescale"]) out.guidance_rescale = f["CFG rescale"];
  if (f.Seed) out.seed = f.Seed;
  const size = /^(\d+)x(\d+)$/.exec(f.Size || "");
  if (size) [out.width, out.height] = [size[1], size[2]];
  if (f["Denoising strength"]) out.strength = f["Denoising strength"];
  out.karras = f["Schedule type"] === "Karras";
  if (f["Timestep spacing"]) out.timestep_spacing = f["Timestep spacing"];
  if (f.Model) out.model = f.Model;
  return out;
}
