"""A JSON job request -> `JobRequest` (prompt, SamplingSettings, model, init image, previews), or an error per field.

No checks of its own: every value goes through `SamplingSettings` (the typed request the CLI uses, with
its limits). Each field is first checked alone, so that every bad field gets its own message; then all
together (checks that relate two fields, e.g. seed + num_images past 2^64-1). The init image is decoded by
the function the caller passes (serve.uploads.decode_image: bounded, never a URL).

A job body (JSON object); every field but `prompt` may be left out (or null: the model's default):
    prompt, negative_prompt: text (<= limits.MAX_PROMPT_CHARS characters)
    model: a served model name (GET /api/v1/capabilities); default: the first one
    steps, sampler, guidance, guidance_rescale, seed (-1: random), num_images, width, height, karras,
    timestep_spacing: as SamplingSettings
    init_image: img2img, a base64 PNG/JPEG/WebP or a data:image/...;base64, URL
    strength: img2img only, 0..1 (default 0.8)
    preview_every: k >= 1 (at most steps): a decoded x0 preview in the step event every k steps; 0: none
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

from ldmkit.errors import UsageError
from ldmkit.pipeline import limits
from ldmkit.pipeline.settings import SamplingSettings, check_text

SETTINGS_FIELDS = ("negative_prompt", "steps", "sampler", "guidance", "guidance_rescale", "seed", "num_images",
                   "width", "height", "karras", "timestep_spacing", "strength")
"""The SamplingSettings fields a client may set. Not `max_pixels` (the pixel budget is the server's)."""
JOB_FIELDS = ("prompt", "model", *SETTINGS_FIELDS, "init_image", "preview_every")
"""Every field of a job body."""
UNBATCHED = ("seed", "num_images", "preview_every")
"""Stored job settings that may differ between jobs sampled together."""


class RequestErrors(Exception):
    """One message per field: [{"field": ..., "error": ...}]; `status` is the HTTP answer (422, or 413 for an
    upload over a size or pixel limit)."""

    def __init__(self, errors: list[dict], status: int = 422):
        super().__init__("; ".join(f"{e['field']}: {e['error']}" for e in errors))
        self.errors, self.status = errors, status


@dataclass
class JobRequest:
    """A checked job body."""

    prompt: str
    settings: SamplingSettings
    """Seed -1 already drawn (the job's seeds are known, and stored, from the start)."""
    model: str
    init_image: object = None
    """The decoded RGB PIL image (img2img), or None."""
    preview_every: int = 0
    """Decode an x0 preview every this many steps (0: none)."""


def read_job(body: object, models: list[str], default_model: str, capacity: int,
             decode_image: Callable[[object, str], object] | None = None) -> JobRequest:
    """The checked request; RequestErrors listing every bad field otherwise (status 413 alone, when the init
    image is over a size limit). Without `decode_image`, init_image is refused."""
    if not isinstance(body, dict):
        raise RequestErrors([{"field": "body", "error": "expected a JSON object"}])
    errors = [{"field": str(k)[:100], "error": "unknown field"} for k in body if k not in JOB_FIELDS]
    prompt = body.get("prompt")
    if prompt is None:
        errors.append({"field": "prompt", "error": "required"})
    else:
        try:
            check_text(prompt, "prompt")
        except UsageError as err:
            errors.append({"field": "prompt", "error": str(err)})
    model = default_model if body.get("model") is None else body["model"]
    if not isinstance(model, str) or model not in models:
        errors.append({"field": "model", "error": f"unknown model; served: {', '.join(models)}"})
    fields = {k: body[k] for k in SETTINGS_FIELDS if body.get(k) is not None}
    for key, value in fields.items():
        try:
            SamplingSettings(**{key: value})
        except (UsageError, TypeError) as err:
            errors.append({"field": key, "error": str(err)})
    if not errors and isinstance(fields.get("num_images"), int) and fields["num_images"] > capacity:
        errors.append({"field": "num_images", "error": f"at most {capacity} images per request on this server "
                                                       "(its queue size, --max-queue)"})
    preview_every = _preview_every(body.get("preview_every"), fields.get("steps"), errors)
    image = None
    if body.get("init_image") is not None:
        if decode_image is None:
            errors.append({"field": "init_image", "error": "img2img is not served here"})
        else:
            try:
                image = decode_image(body["init_image"], "init_image")
            except RequestErrors as err:
                if err.status == 413:
                    raise
                errors += err.errors
    elif "strength" in fields:
        errors.append({"field": "strength", "error": "strength has no effect without init_image"})
    if errors:
        raise RequestErrors(errors)
    try:
        settings = SamplingSettings(**fields).with_seed()
    except UsageError as err:
        raise RequestErrors([{"field": "request", "error": str(err)}]) from None
    return JobRequest(prompt, settings, model, image, preview_every)


def _preview_every(value: object, steps: object, errors: list[dict]) -> int:
    """preview_every checked: an integer 0..steps (0 or null: no previews); 0 when it is bad (with an error)."""
    if value is None:
        return 0
    top = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else limits.MAX_STEPS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        errors.append({"field": "preview_every", "error": f"must be an integer in 0..{top} (steps; 0: no previews), "
                                                          f"got {str(value)[:50]}"})
        return 0
    return value


def parse_job(body: object, models: list[str], default_model: str, capacity: int
              ) -> tuple[str, SamplingSettings, str]:
    """`read_job` for a body without an init image: (prompt, settings, model)."""
    job = read_job(body, models, default_model, capacity)
    return job.prompt, job.settings, job.model


def settings_json(settings: SamplingSettings) -> dict:
    """The client-settable fields of `settings`."""
    data = asdict(settings)
    return {k: data[k] for k in SETTINGS_FIELDS}


def job_settings(job: JobRequest, upload_id: str | None) -> dict:
    """What is stored with the job: its settings, the id of its saved init image, its preview interval."""
    return {**settings_json(job.settings), "init_image": upload_id, "preview_every": job.preview_every}


def sampling_settings(stored: dict) -> SamplingSettings:
    """The SamplingSettings of stored job settings, less seed and image count (those are per job in a batch)."""
    return SamplingSettings(**{k: v for k, v in stored.items() if k in SETTINGS_FIELDS and k not in UNBATCHED})


def batch_key(model: str, settings: dict) -> str:
    """Jobs with equal keys can share one sampling run: all settings equal (the init image and strength
    included) but the seeds, image count and preview interval."""
    same = {k: v for k, v in settings.items() if k not in UNBATCHED}
    return json.dumps({"model": model, **same}, sort_keys=True)


def field_of(message: str) -> str:
    """The field a model-dependent check (Pipeline.resolve) names first in its message ("size" for the pixel
    budget of width x height), else "request"."""
    head = message.split(" ", 1)[0].strip(":").lstrip("-").replace("-", "_")
    return head if head in (*SETTINGS_FIELDS, "size") else "request"
