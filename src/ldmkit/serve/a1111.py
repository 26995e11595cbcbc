"""A subset of the AUTOMATIC1111 web UI API under /sdapi/v1, so existing clients work unchanged.

txt2img creates an ordinary queued job (same checks, same queue, same batching) and waits for it;
progress and interrupt act on the running job only. Unknown request keys are ignored and listed in
`info` (as `ignored_keys`). Not served yet: img2img, options, png-info.
"""

from __future__ import annotations

import asyncio
import base64
import json

from fastapi import Request
from fastapi.responses import JSONResponse

from ldmkit.serve.request import RequestErrors
from ldmkit.serve.store import Conflict

SAMPLER_NAMES = {  # A1111 name -> (ldmkit sampler, karras)
    "DPM++ 2M": ("dpmpp_2m", False), "DPM++ 2M Karras": ("dpmpp_2m", True), "Euler a": ("euler_ancestral", False),
    "Euler": ("euler", False), "Heun": ("heun", False), "DDIM": ("ddim", False), "PLMS": ("pndm", False),
    "UniPC": ("unipc", False), "DDPM": ("ddpm", False),
}
KNOWN_KEYS = ("prompt", "negative_prompt", "steps", "sampler_name", "sampler_index", "scheduler", "cfg_scale",
              "seed", "width", "height", "batch_size", "n_iter", "override_settings")


def to_native(body: object) -> tuple[dict, list[str]]:
    """An A1111 txt2img body -> a native job body, and the keys that were ignored."""
    if not isinstance(body, dict):
        raise RequestErrors([{"field": "body", "error": "expected a JSON object"}])
    ignored = sorted(str(k)[:100] for k in body if k not in KNOWN_KEYS)
    native = {"prompt": body.get("prompt", ""), "negative_prompt": body.get("negative_prompt", "")}
    for theirs, ours in (("steps", "steps"), ("cfg_scale", "guidance"), ("seed", "seed"), ("width", "width"),
                         ("height", "height")):
        if body.get(theirs) is not None:
            native[ours] = body[theirs]
    name = body.get("sampler_name") or body.get("sampler_index")
    if name:
        sampler, karras = SAMPLER_NAMES.get(name, (name, False))
        native["sampler"] = sampler
        if karras or body.get("scheduler") == "Karras":
            native["karras"] = True
    count = []
    for key in ("batch_size", "n_iter"):
        value = body.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestErrors([{"field": key, "error": f"must be an integer >= 1, got {str(value)[:50]}"}])
        count.append(value)
    native["num_images"] = count[0] * count[1]
    override = body.get("override_settings") or {}
    if isinstance(override, dict) and override.get("sd_model_checkpoint"):
        native["model"] = str(override["sd_model_checkpoint"]).split(" [", 1)[0]  # "name [hash]" -> name
    return native, ignored


def register(app, *, submit_native, read_json, store, hub, config) -> None:
    """Add the /sdapi/v1 routes; `submit_native(body) -> JSONResponse` is POST /api/v1/jobs's logic,
    `read_json(request)` its body parser."""
    names = list(config.models)

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request):
        body = await read_json(request)
        native, ignored = to_native(body)
        reply = submit_native(native)
        if reply.status_code != 202:
            return reply
        job_id = json.loads(reply.body)["id"]
        while True:  # the client waits, as with A1111; the job is an ordinary queued job meanwhile
            job = store.get(job_id)
            if job["status"] not in ("queued", "running"):
                break
            if await request.is_disconnected():
                return JSONResponse({"detail": "client went away"}, status_code=499)
            await asyncio.sleep(0.1)
        if job["status"] != "succeeded":
            internal = (job["error"] or "").startswith("internal error")
            return JSONResponse({"detail": f"job {job['status']}: {job['error'] or ''}".strip()},
                                status_code=409 if job["status"] != "failed" else 500 if internal else 422)
        images = [base64.b64encode((store.images_dir / f"{i['id']}.png").read_bytes()).decode()
                  for i in job["images"]]
        seeds = [int(s) for s in job["seeds"]]
        resolved = job.get("resolved") or {}
        info = {"prompt": job["prompt"], "all_prompts": [job["prompt"]] * len(seeds),
                "negative_prompt": job["settings"]["negative_prompt"], "seed": seeds[0], "all_seeds": seeds,
                "steps": resolved.get("steps"), "sampler_name": resolved.get("sampler"),
                "cfg_scale": resolved.get("guidance"), "width": resolved.get("width"),
                "height": resolved.get("height"), "sd_model_name": job["model"], "sd_model_hash": job["model_hash"],
                "job_id": job_id, "ignored_keys": ignored}
        return {"images": images, "parameters": body, "info": json.dumps(info)}

    @app.get("/sdapi/v1/progress")
    async def progress():
        running, _ = store.list("running", None, 1)
        queued = store.counts()["queued"]
        if not running:
            return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                    "state": {"job_count": queued, "sampling_step": 0, "sampling_steps": 0, "interrupted": False}}
        steps = [e for e in hub.since(running[0]["id"], 0) if e["event"] == "step"]
        last = steps[-1] if steps else {"progress": 0.0, "eta_s": 0.0, "step": 0, "steps": 0}
        return {"progress": last["progress"], "eta_relative": last["eta_s"], "current_image": None,
                "textinfo": None, "state": {"job": running[0]["id"], "job_count": queued + 1,
                                            "sampling_step": last["step"], "sampling_steps": last["steps"],
                                            "interrupted": running[0]["cancel_requested"]}}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt():
        """Cancels the running job(s) only (never a queued one: A1111 #13413 hit the wrong job)."""
        running, stopped = store.list("running", None, 100)[0], []
        for job in running:
            try:
                store.cancel(job["id"])
                stopped.append(job["id"])
            except (KeyError, Conflict):  # it finished meanwhile
                pass
        return {"interrupted": stopped}

    @app.get("/sdapi/v1/samplers")
    async def samplers():
        from ldmkit.diffusion.registry import SAMPLERS

        named = [{"name": a, "aliases": [s], "options": {"karras": "true"} if k else {}}
                 for a, (s, k) in SAMPLER_NAMES.items()]
        return named + [{"name": s, "aliases": [], "options": {}} for s in SAMPLERS]

    @app.get("/sdapi/v1/sd-models")
    async def sd_models():
        return [{"title": n, "model_name": n, "hash": None, "sha256": None, "filename": str(config.models[n]),
                 "config": None} for n in names]
