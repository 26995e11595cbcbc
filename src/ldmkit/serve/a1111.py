"""A subset of the AUTOMATIC1111 web UI API under /sdapi/v1, so existing clients work unchanged.

txt2img and img2img create ordinary queued jobs through the native path (POST /api/v1/jobs's parse and
submit: same checks, same queue, same batching) and wait for them, as A1111 does. Unknown request keys are
ignored and listed in `info` (`ignored_keys`). The model A1111 clients see as loaded (`sd_model_checkpoint`)
lives in memory only: POST /options never writes a file.

Progress and interrupt act on one job, the one `GET /progress` reports in `state.job`: the oldest running job
an A1111 client is waiting for, else the oldest running job. A client that hangs up cancels its own job.
Interrupt never reaches a queued job, nor a second job when the one it meant is stopping or was stopped less
than INTERRUPT_GRACE_S ago (A1111 #13413, #16409: an interrupt meant for one request stopped the next).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

from fastapi import Request
from fastapi.responses import JSONResponse

from ldmkit.serve.a1111_fields import (IMG2IMG_KEYS, TXT2IMG_KEYS, a1111_errors, checkpoint_name, sampler_name_of,
                                       samplers_list, scheduler_label_of, schedulers_list, to_native)
from ldmkit.serve.request import RequestErrors
from ldmkit.serve.store import Conflict

KNOWN_KEYS = TXT2IMG_KEYS
"""The txt2img keys that are used (others are listed in `info.ignored_keys`)."""
INTERRUPT_GRACE_S = 2.0
"""An interrupt this soon after an A1111 job was stopped (by interrupt or hang-up) never stops a job that
started after that stop: it is a repeat meant for the stopped job (SillyTavern hangs up, then interrupts)."""
PREVIEW_EVERY = 10
"""Steps between the previews of A1111 jobs that give `steps` (`current_image` of /progress); A1111's default."""


class _State:
    """What the A1111 layer keeps in memory: the checkpoint its clients select, the jobs they wait for."""

    def __init__(self, names: list[str]):
        self.checkpoint = names[0]
        self.waiting: set[str] = set()  # ids of the jobs whose A1111 client is waiting for the answer
        self.hashes: dict[str, str] = {}  # model -> hash, learnt from finished jobs
        self.last_stop = 0.0  # when an A1111 job was last stopped by interrupt or hang-up


def register(app, *, submit_native, read_json, store, hub, config) -> None:
    """Add the /sdapi/v1 routes; `submit_native(body) -> JSONResponse` is POST /api/v1/jobs's logic,
    `read_json(request)` its body parser."""
    names = list(config.models)
    state = _State(names)

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request):
        return await _generate(request, img2img=False)

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request):
        return await _generate(request, img2img=True)

    async def _generate(request: Request, img2img: bool):
        body = await read_json(request)
        native, ignored = to_native(body, names, state.checkpoint, img2img=img2img)
        steps = native.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1:  # else no previews: the
            native["preview_every"] = min(steps, PREVIEW_EVERY)  # model's default steps may be under PREVIEW_EVERY
        try:
            reply = await asyncio.to_thread(submit_native, native)  # may decode an init image: off the event loop
        except RequestErrors as err:
            raise a1111_errors(err) from None
        if reply.status_code != 202:
            return reply
        job_id = json.loads(reply.body)["id"]
        state.waiting.add(job_id)
        try:
            job = await _wait(request, job_id)
        finally:
            state.waiting.discard(job_id)
        if job is None:
            return JSONResponse({"detail": "client went away; its job was cancelled"}, status_code=499)
        if job["status"] != "succeeded":
            internal = (job["error"] or "").startswith("internal error")
            return JSONResponse({"detail": f"job {job['status']}: {job['error'] or ''}".strip()},
                                status_code=409 if job["status"] != "failed" else 500 if internal else 422)
        if job["model_hash"]:
            state.hashes[job["model"]] = job["model_hash"]
        return await asyncio.to_thread(_answer, job, body, ignored, img2img)  # reads the PNG files

    async def _wait(request: Request, job_id: str) -> dict | None:
        """The finished job; None (and the job cancelled) when the client hangs up first."""
        while True:
            job = store.get(job_id)
            if job["status"] not in ("queued", "running"):
                return job
            if await request.is_disconnected():
                _cancel(job_id)
                return None
            await asyncio.sleep(0.1)

    def _cancel(job_id: str) -> None:
        state.last_stop = time.time()
        try:
            if store.cancel(job_id) == "cancelled":
                hub.publish(job_id, "cancelled")
        except (KeyError, Conflict):  # it finished meanwhile
            pass

    def _answer(job: dict, body: dict, ignored: list[str], img2img: bool) -> dict:
        paths = [store.images_dir / f"{i['id']}.png" for i in job["images"]]
        infotexts = [_png_parameters(p) for p in paths]
        send = body.get("send_images") is not False  # null: the default (true)
        images = [base64.b64encode(p.read_bytes()).decode() for p in paths] if send else []
        echo = {**body, "init_images": None, "mask": None} if img2img else body  # as A1111 (include_init_images off)
        return {"images": images, "parameters": echo, "info": json.dumps(_info(job, body, ignored, infotexts, img2img))}

    @app.get("/sdapi/v1/progress")
    async def progress(skip_current_image: bool = False):
        counts = store.counts()
        job = _current()
        if job is None:
            return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                    "state": {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                              "job_count": counts["queued"], "job_timestamp": "0", "job_no": 0,
                              "sampling_step": 0, "sampling_steps": 0}}
        steps = [e for e in hub.since(job["id"], 0) if e["event"] == "step"]  # the latest keeps the last preview
        last = steps[-1] if steps else {"progress": 0.0, "eta_s": 0.0, "step": 0, "steps": 0}
        preview = None if skip_current_image else last.get("preview")
        return {"progress": last["progress"], "eta_relative": last["eta_s"],
                "current_image": preview and preview.split(",", 1)[-1],  # A1111 sends bare base64, no data: URL
                "textinfo": f"ldmkit job {job['id']}: step {last['step']} of {last['steps']}",
                "state": {"skipped": False, "interrupted": job["cancel_requested"], "stopping_generation": False,
                          "job": job["id"], "job_count": counts["running"] + counts["queued"],
                          "job_timestamp": _timestamp(job["started"]), "job_no": 0,
                          "sampling_step": last["step"], "sampling_steps": last["steps"]}}

    def _current() -> dict | None:
        """The job A1111 clients see as running (module docstring)."""
        running = store.list("running", None, 100)[0]
        waited = [j for j in running if j["id"] in state.waiting]
        return min(waited or running, key=lambda j: j["created"], default=None)

    @app.post("/sdapi/v1/interrupt")
    async def interrupt():
        """Stops the job /progress reports, within a step; queued jobs are never touched."""
        job = _current()
        if job is None or (time.time() - state.last_stop < INTERRUPT_GRACE_S and job["started"] > state.last_stop):
            return {"interrupted": []}
        if not job["cancel_requested"]:
            _cancel(job["id"])
        return {"interrupted": [job["id"]]}

    @app.get("/sdapi/v1/samplers")
    async def samplers():
        return samplers_list()

    @app.get("/sdapi/v1/schedulers")
    async def schedulers():
        return schedulers_list()

    @app.get("/sdapi/v1/upscalers")
    async def upscalers():
        """None are served (SillyTavern lists this route and the next two in its settings)."""
        return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]

    @app.get("/sdapi/v1/latent-upscale-modes")
    async def latent_upscale_modes():
        return []

    @app.get("/sdapi/v1/sd-vae")
    async def sd_vae():
        return []  # each model folder's own VAE is used

    @app.get("/sdapi/v1/sd-models")
    async def sd_models():
        return [{"title": n, "model_name": n, "hash": state.hashes.get(n), "sha256": None,
                 "filename": str(config.models[n]), "config": None} for n in names]

    @app.get("/sdapi/v1/options")
    async def get_options():
        return {"sd_model_checkpoint": state.checkpoint, "sd_checkpoint_hash": state.hashes.get(state.checkpoint),
                "samples_format": "png", "show_progress_every_n_steps": PREVIEW_EVERY}

    @app.post("/sdapi/v1/options")
    async def set_options(request: Request):
        """Only sd_model_checkpoint is set (in memory); Open WebUI posts back every option it read: the others
        are ignored and listed."""
        body = await read_json(request)
        if not isinstance(body, dict):
            raise RequestErrors([{"field": "body", "error": "expected a JSON object"}])
        if body.get("sd_model_checkpoint") is not None:
            model = checkpoint_name(body["sd_model_checkpoint"], names)
            if model is None:
                raise RequestErrors([{"field": "model", "key": "sd_model_checkpoint",
                                      "error": f"not a served model; served: {', '.join(names)}"}])
            state.checkpoint = model
        ignored = sorted(str(k)[:100] for k in body if k != "sd_model_checkpoint")
        return {"sd_model_checkpoint": state.checkpoint, "ignored_keys": ignored}

    @app.post("/sdapi/v1/png-info")
    async def png_info(request: Request):
        from ldmkit.serve.a1111_pnginfo import png_info_of

        body = await read_json(request)
        if not isinstance(body, dict) or "image" not in body:
            raise RequestErrors([{"field": "image", "error": "required: a PNG as base64 or a data URL"}])
        return await asyncio.to_thread(png_info_of, body["image"])


def _png_parameters(path) -> str:
    """The `parameters` text chunk of a PNG the worker wrote (read without decoding the pixels)."""
    from PIL import Image

    with Image.open(path, formats=("PNG",)) as img:
        return img.info.get("parameters", "")


def _timestamp(when: float | None) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.localtime(when)) if when else "0"


def _info(job: dict, body: dict, ignored: list[str], infotexts: list[str], img2img: bool) -> dict:
    """The `info` JSON of a txt2img/img2img answer: A1111's Processed.js() fields ldmkit can fill truthfully,
    plus ldmkit's own (job_id, sampler, ignored_keys, warnings)."""
    from ldmkit import __version__

    resolved = job.get("resolved") or {}
    seeds = [int(s) for s in job["seeds"]]
    negative = job["settings"].get("negative_prompt", "")
    n = len(seeds)
    return {
        "prompt": job["prompt"], "all_prompts": [job["prompt"]] * n, "negative_prompt": negative,
        "all_negative_prompts": [negative] * n, "seed": seeds[0], "all_seeds": seeds,
        "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0,  # variation seeds are not served
        "width": resolved.get("width"), "height": resolved.get("height"),
        "sampler_name": sampler_name_of(resolved), "scheduler": scheduler_label_of(job["settings"]),
        "cfg_scale": resolved.get("guidance"), "steps": resolved.get("steps"),
        "batch_size": body.get("batch_size") or 1, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": job["model"], "sd_model_hash": job["model_hash"], "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": job["settings"].get("strength") if img2img else None,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": infotexts, "styles": [],
        "job_timestamp": _timestamp(job["started"]), "is_using_inpainting_conditioning": False,
        "version": f"ldmkit {__version__}",
        "job_id": job["id"], "sampler": resolved.get("sampler"), "ignored_keys": ignored,
        "warnings": job.get("warnings", []),
    }


__all__ = ["register", "KNOWN_KEYS", "IMG2IMG_KEYS", "PREVIEW_EVERY"]
