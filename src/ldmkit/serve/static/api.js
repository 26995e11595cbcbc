// The server's API from the page: fetch with the Bearer token (asked for once on a 401 and kept in
// sessionStorage), JSON helpers, a server-sent-event reader over fetch (EventSource cannot send a token),
// and image URLs that work with a token (blob URLs).

const TOKEN_KEY = "ldmkit.token";
let askToken = null;
let asking = null;

export class ApiError extends Error {
  constructor(status, body, headers) {
    const detail = body && body.detail;
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
    this.headers = headers;
  }
}

/** `ask(refused)` shows the token dialog and resolves to the token, or null when the user cancels. */
export function setTokenPrompt(ask) {
  askToken = ask;
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function usesToken() {
  return token() !== null;
}

function withAuth(extra) {
  const headers = new Headers(extra || {});
  const t = token();
  if (t) headers.set("Authorization", `Bearer ${t}`);
  return headers;
}

/** fetch() on this server; on 401 the user is asked for the token (one dialog for all waiting requests). */
export async function request(path, options = {}) {
  for (let tries = 0; ; tries++) {
    const resp = await fetch(path, {...options, headers: withAuth(options.headers), cache: "no-store",
                                    credentials: "same-origin", redirect: "error"});
    if (resp.status !== 401 || !askToken || tries >= 3) return resp;
    const refused = token() !== null;
    if (!asking) asking = askToken(refused).finally(() => { asking = null; });
    const given = await asking;
    if (!given) return resp;
    sessionStorage.setItem(TOKEN_KEY, given);
  }
}

async function json(resp) {
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body, resp.headers);
  return body;
}

export async function getJSON(path) {
  return json(await request(path));
}

/** POST a JSON text (a string, so that a 64-bit seed keeps its digits) or nothing. */
export async function postJSON(path, text) {
  const options = {method: "POST"};
  if (text !== undefined) {
    options.body = text;
    options.headers = {"Content-Type": "application/json"};
  }
  return json(await request(path, options));
}

/** Read a text/event-stream, calling onEvent with each `data:` JSON, until it ends or `signal` aborts. */
export async function readEvents(path, onEvent, signal) {
  const resp = await request(path, {signal, headers: {Accept: "text/event-stream"}});
  if (!resp.ok || !resp.body) throw new ApiError(resp.status, null, resp.headers);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (!data) continue;  // a keep-alive comment
      let event;
      try {
        event = JSON.parse(data);
      } catch (err) {
        console.warn("ldmkit: an event that is not JSON", err);
        continue;
      }
      onEvent(event);
    }
  }
}

const blobs = new Map();

/** A URL an <img> or a download link can use: the image's own without a token, else a blob URL. */
export function imageURL(url) {
  if (!usesToken()) return Promise.resolve(url);
  if (!blobs.has(url)) {
    blobs.set(url, request(url).then((resp) => {
      if (!resp.ok) throw new ApiError(resp.status, null, resp.headers);
      return resp.blob();
    }).then((blob) => URL.createObjectURL(blob)));
    blobs.get(url).catch(() => blobs.delete(url));
  }
  return blobs.get(url);
}
