// The page: wires the form, the queue panel, live progress with x0 previews, the gallery and PNG drops
// to the native API (/api/v1). Everything the user or the server wrote is inserted as text, never as HTML.

import {ApiError, getJSON, postJSON, readEvents, setTokenPrompt} from "./api.js";
import {buildForm, clearErrors, clearInitImage, fillForm, jobText, randomSeed, setInitImage, showErrors,
        supports} from "./form.js";
import {Gallery, el, imageCard} from "./gallery.js";
import {parseParameters, pngParameters, settingsOf} from "./png.js";

const $ = (id) => document.getElementById(id);
const JOB_ID = /^[0-9a-f]{32}$/;
const FINAL = ["succeeded", "failed", "cancelled", "interrupted"];
const MINE_SHOWN = 8;  // finished jobs of this page kept in the queue panel

const mine = new Map();  // id -> last known job of those this page submitted (newest last)
let focus = null;  // the job the progress panel follows
let watching = null;  // aborts the followed job's event stream
let previews = 0;
let gallery = null;
let pngSettings = null;

function setStatus(text) {
  $("job-status").textContent = text;
}

function reuse(settings) {
  const skipped = fillForm(settings);
  let note = skipped.length ? `Settings filled in; not served here: ${skipped.join(", ")}.` : "Settings filled in.";
  if (settings.init_image) note += " It started from an image: choose that image again for the same result.";
  setStatus(note);
  $("prompt").focus();
}

// -- token -------------------------------------------------------------------------------------------

function askToken(refused) {
  const dialog = $("token-dialog");
  $("token-message").textContent = refused ? "That token was refused. Enter the server's access token."
    : "This server needs its access token (ldmkit serve --token).";
  $("token-input").value = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const value = $("token-input").value.trim();
      resolve(dialog.returnValue === "ok" && value ? value : null);
    }, {once: true});
  });
}

// -- submitting ------------------------------------------------------------------------------------

async function generate() {
  clearErrors();
  let text;
  try {
    text = jobText();
  } catch (bad) {
    showErrors([bad]);
    return;
  }
  const button = $("generate");
  button.disabled = true;
  try {
    const job = await postJSON("/api/v1/jobs", text);
    mine.set(job.id, {id: job.id, status: job.status, prompt: $("prompt").value, queue_position: job.queue_position});
    follow(job.id, $("prompt").value);
    scheduleQueue();
  } catch (err) {
    if (err instanceof ApiError && Array.isArray(err.detail)) showErrors(err.detail);
    else if (err instanceof ApiError && err.status === 429) {
      $("err-form").textContent = `${err.message} (retry after ${err.headers.get("Retry-After") || "a few"} s)`;
    } else $("err-form").textContent = `Not queued: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// -- progress of the followed job ------------------------------------------------------------------

function follow(id, prompt) {
  if (watching) watching.abort();
  focus = id;
  previews = 0;
  $("job-title").textContent = prompt;
  $("job-progress").value = 0;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("preview").dataset.previews = "0";
  $("results").replaceChildren();
  setStatus("queued");
  watch(id);
}

async function watch(id) {
  // The job's own event stream (it carries the previews); after a dropped connection, the job is read
  // once and the stream opened again, so nothing is missed for long.
  watching = new AbortController();
  const {signal} = watching;
  while (focus === id && !signal.aborted) {
    try {
      await readEvents(`/api/v1/jobs/${id}/events`, (ev) => onJobEvent(id, ev), signal);
    } catch (err) {
      if (signal.aborted) return;
      setStatus(`lost the job's progress stream (${err.message}); reconnecting…`);
    }
    if (focus !== id || signal.aborted) return;
    await new Promise((r) => setTimeout(r, 1000));
    try {
      const job = await getJSON(`/api/v1/jobs/${id}`);
      if (FINAL.includes(job.status)) return finished(job);
    } catch (err) {
      setStatus(`cannot read the job: ${err.message}`);
    }
  }
}

function onJobEvent(id, ev) {
  if (focus !== id) return;
  const status = ev.event === "state" ? ev.status : ev.event;
  if (status === "step") showStep(ev);
  else if (status === "running" || status === "started") setStatus("running");
  else if (status === "queued") {
    setStatus(typeof ev.queue_position === "number" ? `queued, position ${ev.queue_position + 1}` : "queued");
  } else if (FINAL.includes(status)) getJSON(`/api/v1/jobs/${id}`).then(finished).catch((err) => setStatus(err.message));
}

function showStep(ev) {
  $("job-progress").value = ev.progress;
  const eta = typeof ev.eta_s === "number" ? ` · ETA ${ev.eta_s.toFixed(1)} s` : "";
  setStatus(`running: step ${ev.step}/${ev.steps} · ${Math.round(ev.progress * 100)}%${eta}`);
  if (typeof ev.preview === "string" && ev.preview.startsWith("data:image/")) {
    const img = $("preview");
    if (img.src !== ev.preview) {
      img.src = ev.preview;
      previews += 1;
      img.dataset.previews = String(previews);
      img.alt = `Live preview (the model's estimate of the final image) at step ${ev.step} of ${ev.steps}`;
      img.hidden = false;
    }
  }
}

async function finished(job) {
  if (job.id !== focus) return;
  focus = null;
  if (watching) watching.abort();
  mine.set(job.id, job);
  if (job.status === "succeeded") {
    $("job-progress").value = 1;
    const took = job.timings && job.timings.sample_s ? ` in ${job.timings.sample_s} s` : "";
    setStatus(`succeeded: ${job.images.length} image${job.images.length === 1 ? "" : "s"}${took}`);
    $("results").replaceChildren(...job.images.map((_, i) => imageCard(job, i, reuse)));
    $("preview").hidden = true;
  } else {
    setStatus(job.error ? `${job.status}: ${job.error}` : job.status);
  }
  scheduleQueue();
}

// -- events ----------------------------------------------------------------------------------------

function onEvent(ev) {
  if (ev.event === "state") return;
  const id = ev.job_id;
  if (ev.event === "step") {  // the queue-wide stream: progress only (previews come with the job's own)
    const bar = document.querySelector(`#queue li[data-job-id="${CSS.escape(id)}"] progress`);
    if (bar) bar.value = ev.progress;
    return;
  }
  scheduleQueue();
  if (ev.event === "succeeded" && gallery) gallery.refresh().catch(() => {});
}

async function listen() {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 10000)) {
    try {
      $("server-status").textContent = "connected";
      await readEvents("/api/v1/events", (ev) => {
        wait = 1000;
        onEvent(ev);
      });
    } catch (err) {
      console.warn("ldmkit: event stream", err);
    }
    $("server-status").textContent = "connection lost; reconnecting…";
    await new Promise((r) => setTimeout(r, wait));
    updateServerStatus();
  }
}

// -- queue panel -----------------------------------------------------------------------------------

let queueTimer = null;

function scheduleQueue() {
  if (queueTimer === null) queueTimer = setTimeout(() => { queueTimer = null; refreshQueue(); }, 250);
}

async function refreshQueue() {
  let running, queued, health;
  try {
    [running, queued, health] = await Promise.all([getJSON("/api/v1/jobs?status=running&limit=100"),
      getJSON("/api/v1/jobs?status=queued&limit=100"), getJSON("/api/v1/health")]);
  } catch (err) {
    $("server-status").textContent = `cannot read the queue: ${err.message}`;
    return;
  }
  showCounts(health);
  const total = health.jobs.queued;
  queued.jobs.forEach((job, i) => { job.queue_position = total - 1 - i; });  // newest first
  const live = [...running.jobs, ...queued.jobs.reverse()];
  const shown = new Set(live.map((j) => j.id));
  for (const job of live) if (mine.has(job.id)) mine.set(job.id, job);
  for (const job of [...mine.values()]) {  // neither queued nor running now: finished since, ask once
    if (shown.has(job.id) || FINAL.includes(job.status)) continue;
    try {
      mine.set(job.id, await getJSON(`/api/v1/jobs/${job.id}`));
    } catch {
      mine.delete(job.id);
    }
  }
  while (mine.size > 50) mine.delete(mine.keys().next().value);
  const recent = [...mine.values()].filter((j) => !shown.has(j.id)).reverse().slice(0, MINE_SHOWN);
  $("queue").replaceChildren(...[...live, ...recent].map(queueItem));
  if (!live.length && !recent.length) $("queue").append(el("li", {text: "The queue is empty."}));
}

function queueItem(job) {
  const title = el("button", {type: "button", className: "link", text: job.prompt || "(no prompt)",
                              title: "Follow this job's progress"});
  title.addEventListener("click", () => follow(job.id, job.prompt));
  let where = job.status;
  if (job.status === "queued") where = `queued · position ${job.queue_position + 1}`;
  if (job.cancel_requested && job.status === "running") where = "cancelling…";
  const item = el("li", {"data-job-id": job.id, "data-status": job.status}, title,
                  el("span", {className: `badge ${job.status}`, text: where}));
  if (job.status === "running") item.append(el("progress", {max: 1, value: 0, "aria-label": "progress"}));
  if (job.status === "queued" || (job.status === "running" && !job.cancel_requested)) {
    item.append(action("Cancel", job, async () => postJSON(`/api/v1/jobs/${job.id}/cancel`)));
  }
  if (FINAL.includes(job.status)) {
    item.append(action("Retry", job, async () => {
      const again = await postJSON(`/api/v1/jobs/${job.id}/retry`);
      mine.set(again.id, {id: again.id, status: again.status, prompt: job.prompt, queue_position: again.queue_position});
      follow(again.id, job.prompt);
    }));
  }
  return item;
}

function action(label, job, run) {
  const button = el("button", {type: "button", text: label, className: label.toLowerCase(),
                               "aria-label": `${label}: ${job.prompt}`});
  button.addEventListener("click", async () => {
    if (!JOB_ID.test(job.id)) return;
    button.disabled = true;
    try {
      await run();
    } catch (err) {
      $("server-status").textContent = `${label} failed: ${err.message}`;
    }
    scheduleQueue();
  });
  return button;
}

function showCounts(health) {
  const j = health.jobs;
  $("server-status").textContent = `${health.status} · ${j.running} running · ${j.queued} queued · `
    + `${j.succeeded} done`;
}

async function updateServerStatus() {
  try {
    showCounts(await getJSON("/api/v1/health"));
  } catch (err) {
    $("server-status").textContent = `server unreachable: ${err.message}`;
  }
}

// -- PNG parameters ----------------------------------------------------------------------------------

async function readPng(file) {
  $("png-text").hidden = true;
  $("png-use").hidden = true;
  try {
    const text = await pngParameters(file);
    if (text === null) {
      $("png-note").textContent = `${file.name}: no parameters in this PNG.`;
      return;
    }
    $("png-text").textContent = text;
    $("png-text").hidden = false;
    pngSettings = settingsOf(parseParameters(text));
    $("png-note").textContent = `${file.name}: parameters read.`;
    $("png-use").hidden = false;
  } catch (err) {
    $("png-note").textContent = `${file.name}: ${err.message}`;
  }
}

// -- start -------------------------------------------------------------------------------------------

function wire() {
  $("job-form").addEventListener("submit", (e) => { e.preventDefault(); generate(); });
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && !$("token-dialog").open) {
      e.preventDefault();
      generate();
    }
  });
  $("seed-random").addEventListener("click", () => { $("seed").value = randomSeed(); });
  $("strength").addEventListener("input", () => { $("strength-value").value = $("strength").value; });
  $("init_image").addEventListener("change", () => {
    const file = $("init_image").files[0];
    if (file) setInitImage(file).catch((err) => { $("err-init_image").textContent = `cannot read it: ${err.message}`; });
  });
  $("init-clear").addEventListener("click", clearInitImage);
  $("png-file").addEventListener("change", () => { if ($("png-file").files[0]) readPng($("png-file").files[0]); });
  $("png-use").addEventListener("click", () => { if (pngSettings) reuse({...pngSettings, num_images: 1}); });
  document.addEventListener("dragover", (e) => {
    if (e.dataTransfer.types.includes("Files")) e.preventDefault();
  });
  document.addEventListener("drop", (e) => {
    const file = e.dataTransfer.files[0];
    if (!file) return;
    e.preventDefault();
    readPng(file);
  });
}

async function start() {
  setTokenPrompt(askToken);
  wire();
  try {
    buildForm(await getJSON("/api/v1/capabilities"));
  } catch (err) {
    $("server-status").textContent = `cannot read the server's capabilities: ${err.message}`;
    return;
  }
  gallery = new Gallery(reuse);
  document.body.dataset.ready = "true";
  listen();
  refreshQueue();
  gallery.show(0).catch((err) => { $("gallery-items").textContent = `cannot read the gallery: ${err.message}`; });
  if (!supports("preview")) $("preview").alt = "Live previews are not served by this server";
}

start();
