"""A JSON job request -> (prompt, SamplingSettings, model), or an error per field.

No checks of its own: every value goes through `SamplingSettings` (the typed request the CLI uses, with
its limits). Each field is first checked alone, so that every bad field gets its own message; then all
together (checks that relate two fields, e.g. seed + num_images past 2^64-1).
"""

from __future__ import annotations

import json
from dataclasses import asdict

from ldmkit.errors import UsageError
from ldmkit.pipeline.settings import SamplingSettings, check_text

SETTINGS_FIELDS = ("negative_prompt", "steps", "sampler", "guidance", "guidance_rescale", "seed", "num_images",
                   "width", "height", "karras", "timestep_spacing")
"""The SamplingSettings fields a client may set. Not `max_pixels` (the pixel budget is the server's) and not
`strength` (img2img is not served yet)."""


class RequestErrors(Exception):
    """One message per field: [{"field": ..., "error": ...}]."""

    def __init__(self, errors: list[dict]):
        super().__init__("; ".join(f"{e['field']}: {e['error']}" for e in errors))
        self.errors = errors


def parse_job(body: object, models: list[str], default_model: str, capacity: int
              ) -> tuple[str, SamplingSettings, str]:
    """The checked request; RequestErrors listing every bad field otherwise. A random seed (-1) is drawn
    here, so the job's seeds are known (and stored) from the start."""
    if not isinstance(body, dict):
        raise RequestErrors([{"field": "body", "error": "expected a JSON object"}])
    errors = [{"field": str(k)[:100], "error": "unknown field"} for k in body
              if k not in (*SETTINGS_FIELDS, "prompt", "model")]
    prompt = body.get("prompt")
    if prompt is None:
        errors.append({"field": "prompt", "error": "required"})
    else:
        try:
            check_text(prompt, "prompt")
        except UsageError as err:
            errors.append({"field": "prompt", "error": str(err)})
    model = body.get("model", default_model)
    if not isinstance(model, str) or model not in models:
        errors.append({"field": "model", "error": f"unknown model; served: {', '.join(models)}"})
    fields = {k: body[k] for k in SETTINGS_FIELDS if k in body}
    for key, value in fields.items():
        try:
            SamplingSettings(**{key: value})
        except (UsageError, TypeError) as err:
            errors.append({"field": key, "error": str(err)})
    if not errors and isinstance(fields.get("num_images"), int) and fields["num_images"] > capacity:
        errors.append({"field": "num_images", "error": f"at most {capacity} images per request on this server "
                                                       "(its queue size, --max-queue)"})
    if errors:
        raise RequestErrors(errors)
    try:
        settings = SamplingSettings(**fields).with_seed()
    except UsageError as err:
        raise RequestErrors([{"field": "request", "error": str(err)}]) from None
    return prompt, settings, model


def settings_json(settings: SamplingSettings) -> dict:
    """The client-settable fields, as stored with the job."""
    data = asdict(settings)
    return {k: data[k] for k in SETTINGS_FIELDS}


def batch_key(model: str, settings: dict) -> str:
    """Jobs with equal keys can share one sampling run: all settings equal but the seeds and image count."""
    same = {k: v for k, v in settings.items() if k not in ("seed", "num_images")}
    return json.dumps({"model": model, **same}, sort_keys=True)


def field_of(message: str) -> str:
    """The field a model-dependent check (Pipeline.resolve) names first in its message ("size" for the pixel
    budget of width x height), else "request"."""
    head = message.split(" ", 1)[0].strip(":").lstrip("-").replace("-", "_")
    return head if head in (*SETTINGS_FIELDS, "size") else "request"
