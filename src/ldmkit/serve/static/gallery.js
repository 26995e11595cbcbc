// Image cards (an image, its parameters, "reuse these settings", download) and the paginated gallery.

import {getJSON, imageURL} from "./api.js";

const $ = (id) => document.getElementById(id);
const PAGE_JOBS = 6;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

/** The settings that made image `index` of `job` (the values actually used), as one image. */
export function imageSettings(job, index) {
  const used = {...job.settings};
  for (const [key, value] of Object.entries(job.resolved || {})) if (value !== null) used[key] = value;
  delete used.preview_every;  // how the job was watched, not how the image was made
  return {...used, prompt: job.prompt, model: job.model, seed: job.images[index].seed, num_images: 1};
}

function describe(s) {
  const parts = [["Seed", s.seed], ["Steps", s.steps], ["Sampler", s.sampler], ["CFG", s.guidance],
                 ["Size", s.width && s.height ? `${s.width}×${s.height}` : null], ["Model", s.model]];
  if (s.strength !== null && s.strength !== undefined) parts.push(["Strength", s.strength]);
  if (s.negative_prompt) parts.push(["Negative", s.negative_prompt]);
  return parts.filter(([, v]) => v !== null && v !== undefined && v !== "");
}

/** A card for image `index` of a finished job; `onReuse(settings)` fills the form. */
export function imageCard(job, index, onReuse) {
  const image = job.images[index];
  const settings = imageSettings(job, index);
  const img = el("img", {alt: `Generated image: ${job.prompt}`, loading: "lazy", width: 160, height: 160});
  const download = el("a", {text: "Download", className: "button", download: `ldmkit-${settings.seed}.png`,
                            "aria-label": `Download the image of seed ${settings.seed}`});
  imageURL(image.url).then((src) => {
    img.src = src;
    download.href = src;
  }).catch((err) => { img.alt = `image unavailable (${err.message})`; });
  const params = el("dl", {className: "params"});
  for (const [name, value] of describe(settings)) params.append(el("dt", {text: name}), el("dd", {text: String(value)}));
  const reuse = el("button", {type: "button", className: "reuse", text: "Reuse these settings",
                              title: "Fill the form with this image's prompt and settings (its seed, one image)"});
  reuse.addEventListener("click", () => onReuse(settings));
  return el("figure", {className: "card", "data-image-id": image.id, "data-job-id": job.id},
            img, el("figcaption", {}, el("p", {className: "prompt", text: job.prompt}), params,
                    el("div", {className: "inline"}, reuse, download)));
}

/** Succeeded jobs, newest first, PAGE_JOBS jobs a page, through the API's cursors. */
export class Gallery {
  constructor(onReuse) {
    this.onReuse = onReuse;
    this.cursors = [null];  // the cursor of each page seen so far
    this.page = 0;
    this.next = null;
    $("gallery-newer").addEventListener("click", () => this.show(this.page - 1));
    $("gallery-older").addEventListener("click", () => this.show(this.page + 1));
  }

  async show(page) {
    const cursor = this.cursors[page];
    const query = new URLSearchParams({status: "succeeded", limit: String(PAGE_JOBS)});
    if (cursor) query.set("cursor", cursor);
    const data = await getJSON(`/api/v1/jobs?${query}`);
    this.page = page;
    this.next = data.next_cursor;
    if (this.next) this.cursors[page + 1] = this.next;
    const cards = [];
    for (const job of data.jobs) job.images.forEach((_, i) => cards.push(imageCard(job, i, this.onReuse)));
    const items = $("gallery-items");
    items.replaceChildren(...cards);
    if (!cards.length) items.append(el("p", {text: "No images yet."}));
    $("gallery-page").textContent = `page ${page + 1}`;
    $("gallery-newer").disabled = page === 0;
    $("gallery-older").disabled = !this.next;
  }

  /** A new image finished: the first page shows it (other pages stay where the user is). */
  refresh() {
    return this.page === 0 ? this.show(0) : Promise.resolve();
  }
}

export {el};
