"""The FastAPI app: the native API under /api/v1 (see README "ldmkit serve").

Routes only translate HTTP to the store and the worker; requests are checked by `SamplingSettings`
(serve.request), and the front door (host, token, origin, content type, body size) is serve.guard.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ldmkit.errors import LdmkitError, UsageError
from ldmkit.pipeline import limits
from ldmkit.pipeline.img2img import fit_image
from ldmkit.serve import uploads
from ldmkit.serve.events import TERMINAL, EventHub
from ldmkit.serve.guard import Guard
from ldmkit.serve.request import JOB_FIELDS, RequestErrors, batch_key, field_of, job_settings, read_job
from ldmkit.serve.store import STATES, Conflict, JobStore, QueueFull

IMAGE_ID = re.compile(r"[0-9a-f]{32}")
JOB_ID = IMAGE_ID
MAX_PAGE = 100
"""Jobs per page of GET /jobs (the default is 20)."""


@dataclass
class ServerConfig:
    """What `ldmkit serve` was started with."""

    data_dir: Path
    """Where the job database and the images live (created if missing)."""
    models: dict[str, Path]
    """Served model name -> folder or checkpoint file; the first one is the default."""
    host: str = "127.0.0.1"
    """Address bound; other than loopback only with a token."""
    port: int = 7860
    """TCP port, 1..65535."""
    token: str | None = None
    """Bearer token every request must carry (None: no token, loopback only)."""
    max_queue: int = 256
    """Images that may wait in the queue; a request that does not fit whole gets 429."""
    batch_images: int = 16
    """Images the worker samples together at most (compatible jobs are batched)."""
    max_body: int = 64 * 1024
    """Largest request body in bytes without an image (413 beyond); one with an image field (init_image,
    init_images, image) may be larger by an upload's base64 (`body_limit`)."""
    fast: bool = False
    """bf16 UNet + torch.compile (`ldmkit serve` compiles the default model at start)."""
    max_loaded: int = 2
    """Models kept loaded at once (the least recently used one is dropped)."""

    @property
    def body_limit(self) -> int:
        """Largest body of any request: max_body plus one image of uploads.MAX_UPLOAD_BYTES in base64."""
        return self.max_body + uploads.MAX_ENCODED_CHARS

    def __post_init__(self) -> None:
        if not self.models:
            raise UsageError("serve needs at least one model")
        for name, value in (("--max-queue", self.max_queue), ("--batch", self.batch_images)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
                raise UsageError(f"{name} must be an integer in 1..100000, got {value!r}")
        from ldmkit.serve.models import MAX_LOADED

        if isinstance(self.max_loaded, bool) or not isinstance(self.max_loaded, int) or \
                not 1 <= self.max_loaded <= MAX_LOADED:
            raise UsageError(f"--max-loaded must be an integer in 1..{MAX_LOADED}, got {self.max_loaded!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise UsageError(f"--port must be in 1..65535, got {self.port!r}")
        if self.token is not None and (len(self.token) < 8 or not self.token.isprintable() or " " in self.token):
            raise UsageError("--token must be at least 8 printable characters without spaces")
        from ldmkit.serve.guard import is_loopback

        if not is_loopback(self.host) and self.token is None:
            raise UsageError(f"--host {self.host} exposes the server beyond this machine: pass --token TOKEN too "
                             "(clients then send Authorization: Bearer TOKEN)")


def _error(status: int, detail, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _json_reader(max_plain: int):
    """The body parser of JSON routes: a body over `max_plain` bytes is accepted only when it is an object
    with an image field (the guard already bounds every body by ServerConfig.body_limit)."""
    async def read_json(request: Request):
        raw = await request.body()
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: [[[[... nested past the stack
            raise RequestErrors([{"field": "body", "error": "not valid JSON"}]) from None
        if len(raw) > max_plain and not (isinstance(body, dict) and any(k in body for k in uploads.IMAGE_FIELDS)):
            raise RequestErrors([{"field": "body", "error": f"request body over {max_plain} bytes (only a body "
                                                            "with an image may be larger)"}], 413)
        return body
    return read_json


def create_app(config: ServerConfig, store: JobStore, hub: EventHub, worker) -> FastAPI:
    """The app; `worker` runs the jobs (started and stopped with the app)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        if not worker.is_alive():
            worker.start()
        yield
        worker.stop()  # a running batch stops within a step and goes back to the queue, not counted as a try
        await asyncio.to_thread(worker.join, 60)

    app = FastAPI(title="ldmkit", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    names = list(config.models)
    read_json = _json_reader(config.max_body)

    @app.exception_handler(RequestErrors)
    async def _request_errors(_request, err: RequestErrors):
        return _error(err.status, err.errors)

    @app.post("/api/v1/jobs")
    async def submit(request: Request):
        body = await read_json(request)
        return await asyncio.to_thread(submit_body, body)  # decoding an upload must not stall the event loop

    def submit_body(body: object) -> JSONResponse:
        """POST /api/v1/jobs on a parsed body (the A1111 routes call it too); RequestErrors if it is bad."""
        job = read_job(body, names, names[0], config.max_queue, uploads.decode_image)
        try:
            resolved = worker.check(job.model, job.settings, job.init_image)
        except LdmkitError as err:
            raise RequestErrors([{"field": field_of(str(err)), "error": str(err)}]) from None
        if resolved is not None and job.preview_every > resolved.steps:
            raise RequestErrors([{"field": "preview_every", "error": f"at most steps ({resolved.steps}, the model's "
                                                                     f"default), got {job.preview_every}"}])
        upload = None
        if job.init_image is not None:  # kept at the sampling size when it is known: the same pixels sampled
            image = job.init_image if resolved is None else fit_image(job.init_image, resolved.width, resolved.height)
            upload = uploads.save_upload(config.data_dir, image)
        return _queue(job.prompt, job_settings(job, upload), job.model)

    def _queue(prompt: str, settings: dict, model: str, retry_of: str | None = None):
        with hub.admission:  # the worker claims under it too: "queued" always comes before "started"
            try:
                job, position = store.submit(prompt, settings, model, batch_key(model, settings), config.max_queue,
                                             retry_of)
            except QueueFull as full:
                return _error(429, f"queue full: {full}; this request needs {settings['num_images']} places. "
                                   "Try again later", {"Retry-After": "5"})
            hub.publish(job["id"], "queued", queue_position=position)
        worker.wake()
        return JSONResponse({"id": job["id"], "status": job["status"], "queue_position": position}, status_code=202)

    @app.get("/api/v1/jobs")
    async def list_jobs(status: str | None = None, cursor: str | None = None, limit: str = "20"):
        errors = []
        if status is not None and status not in STATES:
            errors.append({"field": "status", "error": f"one of {', '.join(STATES)}"})
        if cursor is not None and not (cursor.isdigit() and len(cursor) < 19):
            errors.append({"field": "cursor", "error": "not a cursor from a previous page"})
        if not (limit.isdigit() and 1 <= int(limit) <= MAX_PAGE):
            errors.append({"field": "limit", "error": f"an integer in 1..{MAX_PAGE}"})
        if errors:
            return _error(422, errors)
        jobs, nxt = store.list(status, int(cursor) if cursor else None, int(limit))
        return {"jobs": jobs, "next_cursor": None if nxt is None else str(nxt)}

    def _job_or_404(job_id: str):
        job = store.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            return None, _error(404, "no such job")
        job["queue_position"] = store.queue_position(job_id)
        return job, None

    @app.get("/api/v1/jobs/{job_id}")
    async def get_job(job_id: str):
        job, missing = _job_or_404(job_id)
        return missing or job

    @app.post("/api/v1/jobs/{job_id}/cancel")
    async def cancel(job_id: str):
        if not JOB_ID.fullmatch(job_id):
            return _error(404, "no such job")
        try:
            status = store.cancel(job_id)
        except KeyError:
            return _error(404, "no such job")
        except Conflict as err:
            return _error(409, str(err))
        if status == "cancelled":
            hub.publish(job_id, "cancelled")
        return JSONResponse({"id": job_id, "status": status, "cancel_requested": True},
                            status_code=200 if status == "cancelled" else 202)

    @app.post("/api/v1/jobs/{job_id}/retry")
    async def retry(job_id: str):
        """A new job with the same prompt, settings (seeds included) and model."""
        job, missing = _job_or_404(job_id)
        if missing:
            return missing
        if job["status"] not in ("failed", "cancelled", "interrupted", "succeeded"):
            return _error(409, f"job {job_id} is {job['status']}; retry a finished job")
        if job["model"] not in config.models:
            return _error(409, f"model {job['model']!r} is not served now")
        upload = job["settings"].get("init_image")
        if upload and not (uploads.uploads_dir(config.data_dir) / f"{upload}.png").is_file():
            return _error(409, f"the init image of job {job_id} is gone from the server")
        return _queue(job["prompt"], job["settings"], job["model"], retry_of=job_id)

    @app.get("/api/v1/jobs/{job_id}/events")
    async def events(job_id: str, request: Request):
        job, missing = _job_or_404(job_id)
        if missing:
            return missing
        return StreamingResponse(_stream(job, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def _stream(job: dict, request: Request):
        yield _sse({"event": "state", "status": job["status"], "queue_position": job["queue_position"]})
        if job["status"] in TERMINAL:
            return
        seen, idle = 0, 0.0
        while not await request.is_disconnected():
            new = hub.since(job["id"], seen)
            for event in new:
                seen = event["seq"]
                yield _sse(event)
                if event["event"] in TERMINAL:
                    return
            await asyncio.sleep(0.1)
            idle = 0.0 if new else idle + 0.1
            if idle >= 2.0:  # a final state the hub no longer holds (or a comment to keep proxies open)
                idle, now = 0.0, store.get(job["id"])
                if now["status"] in TERMINAL:
                    yield _sse({"event": now["status"], "job_id": job["id"]})
                    return
                yield ": keep-alive\n\n"

    @app.get("/api/v1/events")
    async def queue_events(request: Request):
        """Every job's events from now on (queued, started, step, final states)."""
        return StreamingResponse(_queue_stream(request, hub.since_all(0)[-1:]), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    async def _queue_stream(request: Request, start: list[dict]):
        seen, idle = (start[0]["seq"] if start else 0), 0.0
        yield _sse({"event": "state", "jobs": store.counts()})
        while not await request.is_disconnected():
            new = hub.since_all(seen)
            for event in new:
                seen = event["seq"]
                yield _sse(event)
            await asyncio.sleep(0.1)
            idle = 0.0 if new else idle + 0.1
            if idle >= 15.0:
                idle = 0.0
                yield ": keep-alive\n\n"

    @app.get("/api/v1/images/{name}")
    async def image(name: str):
        image_id = name[:-4] if name.endswith(".png") else ""
        if not IMAGE_ID.fullmatch(image_id) or not store.image_exists(image_id):
            return _error(404, "no such image")
        return FileResponse(store.images_dir / f"{image_id}.png", media_type="image/png",
                            headers={"Cache-Control": "private, max-age=31536000, immutable"})

    @app.get("/api/v1/capabilities")
    async def capabilities():
        return capabilities_of(config, worker.pool)

    @app.get("/api/v1/health")
    async def health():
        return {"status": "ok" if worker.is_alive() else "worker stopped", "jobs": store.counts()}

    from ldmkit.serve import a1111, page

    page.register(app)  # the web page: GET / and a fixed list of /static/ files
    a1111.register(app, submit_native=submit_body, read_json=read_json, store=store, hub=hub, config=config)
    return Guard(app, bind_host=config.host, token=config.token, max_body=config.body_limit)


def capabilities_of(config: ServerConfig, pool) -> dict:
    """GET /api/v1/capabilities: what a client (the web page's form) may ask of this server.

    `defaults` are the default model's resolved sampling defaults (None until it is loaded; `ldmkit serve`
    loads it before serving); `model_defaults` has each model's own once it has been loaded (else None)."""
    from ldmkit.diffusion.registry import SAMPLERS
    from ldmkit.pipeline.settings import DEFAULT_STRENGTH
    from ldmkit.serve import previews

    names = list(config.models)
    loaded = set(pool.loaded_names())
    side = math.isqrt(limits.MAX_PIXELS)
    defaults = pool.defaults(names[0])
    return {
        "models": [{"name": n, "default": n == names[0]} for n in names],
        "loaded_models": [n for n in names if n in loaded],
        "model_defaults": {n: pool.defaults(n) for n in names},
        "samplers": list(SAMPLERS),
        "img2img": True,
        "preview": True,
        "defaults": None if defaults is None else {**defaults, "strength": DEFAULT_STRENGTH, "seed": -1,
                                                   "num_images": 1, "preview_every": 0},
        "limits": {"max_prompt_chars": limits.MAX_PROMPT_CHARS, "max_pixels": limits.MAX_PIXELS,
                   "max_width": side, "max_height": side, "max_steps": limits.MAX_STEPS,
                   "max_images_per_request": config.max_queue, "max_queue_images": config.max_queue,
                   "batch_images": config.batch_images, "max_body_bytes": config.max_body,
                   "max_body_bytes_with_image": config.body_limit, "max_upload_bytes": uploads.MAX_UPLOAD_BYTES,
                   "max_upload_pixels": uploads.MAX_UPLOAD_PIXELS, "upload_formats": ["png", "jpeg", "webp"],
                   "max_preview_side": previews.MAX_SIDE},
        "fields": list(JOB_FIELDS),
    }


def _sse(event: dict) -> str:
    name = event.get("event", "message")
    return f"event: {name}\ndata: {json.dumps(event)}\n\n"
