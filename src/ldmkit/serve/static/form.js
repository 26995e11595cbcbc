// The generate form: built from GET /api/v1/capabilities, read into a job body, filled from a job or a PNG.

const $ = (id) => document.getElementById(id);
const NUMBERS = ["steps", "guidance", "guidance_rescale", "width", "height", "num_images", "preview_every"];
const TEXTS = ["prompt", "negative_prompt"];
let caps = null;
let init = null;  // {dataURL, width, height, bytes, kind} of the img2img start image

function option(value, text, selected) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  o.selected = selected;
  return o;
}

/** The model's default of `name` as the capabilities report it (undefined when not reported). */
function defaultOf(name) {
  const d = caps && caps.defaults;
  return d && d[name] !== null && d[name] !== undefined ? d[name] : undefined;
}

/** Build the choices and limits from the server's capabilities. */
export function buildForm(capabilities) {
  caps = capabilities;
  const models = $("model");
  models.replaceChildren(...caps.models.map((m) => option(m.name, m.name, m.default)));
  const samplers = $("sampler");
  const fallback = defaultOf("sampler");
  samplers.replaceChildren(option("", fallback ? `model default (${fallback})` : "model default", true),
                           ...caps.samplers.map((s) => option(s, s, false)));
  const limits = caps.limits || {};
  if (limits.max_prompt_chars) {
    $("prompt").maxLength = limits.max_prompt_chars;
    $("negative_prompt").maxLength = limits.max_prompt_chars;
  }
  if (limits.max_steps) $("steps").max = limits.max_steps;
  const most = Math.min(limits.max_images_per_request || 16, limits.max_queue_images || 16);
  $("num_images").max = most;
  for (const name of ["steps", "guidance", "width", "height", "guidance_rescale"]) {
    const value = defaultOf(name);
    if (value !== undefined) $(name).placeholder = String(value);
  }
  if (defaultOf("width") !== undefined && defaultOf("height") !== undefined) {
    $("width").value = defaultOf("width");
    $("height").value = defaultOf("height");
  }
  $("preview-field").hidden = !supports("preview");
  $("img2img").hidden = !supports("img2img");
  $("preview_every").placeholder = "auto";
}

/** Whether the server reports a feature ("preview", "img2img") in its capabilities. */
export function supports(feature) {
  if (!caps) return false;
  const f = caps.features || {};
  return Boolean(caps[feature] || f[feature] || (caps.fields || []).includes(feature === "preview"
    ? "preview_every" : "init_image"));
}

/** A random seed in 0..2^53-1 (exact in JSON and in JavaScript numbers). */
export function randomSeed() {
  const words = crypto.getRandomValues(new Uint32Array(2));
  return String((words[0] & 0x1fffff) * 2 ** 32 + words[1]);
}

/** Preview every k steps: the field, else about 8 previews per job. */
function previewEvery(steps) {
  const given = $("preview_every").value.trim();
  if (given !== "") return Number(given);
  const n = steps || Number(defaultOf("steps")) || 20;
  return Math.max(1, Math.round(n / 8));
}

/** The job body as JSON text, or throws {field, error} for a field the server could not even parse. */
export function jobText() {
  const body = {};
  for (const name of TEXTS) {
    const value = $(name).value;
    if (value !== "" || name === "prompt") body[name] = value;
  }
  for (const name of NUMBERS) {
    if (name === "preview_every") continue;
    const text = $(name).value.trim();
    if (text === "") continue;
    const value = Number(text);
    if (!Number.isFinite(value)) throw {field: name, error: "not a number"};
    body[name] = value;
  }
  for (const name of ["sampler", "timestep_spacing"]) if ($(name).value) body[name] = $(name).value;
  if ($("karras").checked) body.karras = true;
  if ($("model").value) body.model = $("model").value;
  if (supports("preview")) body.preview_every = previewEvery(body.steps);
  if (init) {
    body.init_image = init.dataURL;
    body.strength = Number($("strength").value);
  }
  const seed = $("seed").value.trim() || "-1";
  if (!/^(-1|[0-9]{1,20})$/.test(seed)) throw {field: "seed", error: "-1 or a whole number 0..18446744073709551615"};
  const text = JSON.stringify(body);  // the seed goes in as written: a 64-bit seed is not a safe JS number
  return `${text.slice(0, -1)},"seed":${seed}}`;
}

/** Put settings (a job's, or a PNG's) into the form; returns the names of those that could not be used. */
export function fillForm(settings) {
  const skipped = [];
  for (const name of [...TEXTS, ...NUMBERS, "seed"]) {
    if (name in settings) $(name).value = settings[name] === null ? "" : String(settings[name]);
  }
  for (const name of ["sampler", "timestep_spacing", "model"]) {
    if (!(name in settings)) continue;
    const value = settings[name] === null ? "" : String(settings[name]);
    const select = $(name);
    if ([...select.options].some((o) => o.value === value)) select.value = value;
    else skipped.push(`${name} ${value}`);
  }
  if ("karras" in settings) $("karras").checked = Boolean(settings.karras);
  if ("strength" in settings && settings.strength !== null) {
    $("strength").value = settings.strength;
    $("strength-value").value = $("strength").value;
  }
  return skipped;
}

export function showErrors(errors) {
  clearErrors();
  const general = [];
  for (const e of errors) {
    const slot = $(`err-${e.field}`);
    if (slot) {
      slot.textContent = e.error;
      const details = slot.closest("details");
      if (details) details.open = true;
      const input = $(e.field);
      if (input) input.setAttribute("aria-invalid", "true");
    } else {
      general.push(`${e.field}: ${e.error}`);
    }
  }
  $("err-form").textContent = general.join("; ") || "Please correct the fields marked above.";
  const first = document.querySelector("[aria-invalid=true]");
  if (first) first.focus();
}

export function clearErrors() {
  for (const slot of document.querySelectorAll("#job-form .error")) slot.textContent = "";
  for (const input of document.querySelectorAll("#job-form [aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Load the img2img start image: drawn at the form's size (else its own, within the pixel budget). */
export async function setInitImage(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    await img.decode();
    let w = Number($("width").value) || img.naturalWidth;
    let h = Number($("height").value) || img.naturalHeight;
    const budget = (caps && caps.limits && caps.limits.max_pixels) || 1024 * 1024;
    const scale = Math.min(1, Math.sqrt(budget / (w * h)));
    w = Math.max(8, Math.floor((w * scale) / 8) * 8);
    h = Math.max(8, Math.floor((h * scale) / 8) * 8);
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").drawImage(img, 0, 0, w, h);
    const dataURL = canvas.toDataURL("image/png");
    init = {dataURL, width: w, height: h};
    $("init-thumb").src = dataURL;
    $("init-note").textContent = `sent as a ${w}×${h} PNG (${Math.round((dataURL.length * 3) / 4 / 1024)} KiB)`;
    document.querySelector(".init-preview").hidden = false;
  } finally {
    URL.revokeObjectURL(url);
  }
}

export function clearInitImage() {
  init = null;
  $("init_image").value = "";
  $("init-thumb").removeAttribute("src");
  document.querySelector(".init-preview").hidden = true;
}
