"""AUTOMATIC1111 request fields -> the native job body, and ldmkit's results -> A1111's answer fields.

Only names are translated here; every value is checked by the native path (serve.request -> SamplingSettings),
so an A1111 request gets exactly the checks and limits of a native one. An error names both the setting
(`field`, as the native API does) and the A1111 key it came from (`key`).
"""

from __future__ import annotations

from ldmkit.serve.request import RequestErrors, field_of

SAMPLERS = {  # A1111 name -> (ldmkit sampler, Karras sigmas, A1111's own aliases)
    "DPM++ 2M": ("dpmpp_2m", False, ["k_dpmpp_2m"]),
    "DPM++ 2M Karras": ("dpmpp_2m", True, ["k_dpmpp_2m_ka"]),  # A1111 < 1.9 put the schedule in the name
    "Euler a": ("euler_ancestral", False, ["k_euler_a", "k_euler_ancestral"]),
    "Euler": ("euler", False, ["k_euler"]),
    "Heun": ("heun", False, ["k_heun"]),
    "DDIM": ("ddim", False, ["ddim"]),
    "PLMS": ("pndm", False, ["plms"]),
    "UniPC": ("unipc", False, ["unipc"]),
}
"""A1111 samplers ldmkit has (same method; A1111's LMS, DPM2, DPM++ SDE/2S/3M, Restart, LCM are not here).
Their aliases and ldmkit's own names (`ldmkit samplers`) are accepted too."""
ALIASES = {alias: name for name, (_, _, aliases) in SAMPLERS.items() for alias in aliases}
SCHEDULERS = {  # A1111 schedule name -> (label, native fields); a name or its label is accepted
    "automatic": ("Automatic", {}),
    "karras": ("Karras", {"karras": True}),
    "uniform": ("Uniform", {"timestep_spacing": "linspace"}),  # k-diffusion get_sigmas: t = linspace(T-1, 0, n)
    "normal": ("Normal", {"timestep_spacing": "linspace"}),  # linspace(t(sigma_max), t(sigma_min), n): the same t
    "sgm_uniform": ("SGM Uniform", {"timestep_spacing": "trailing"}),  # linspace(T-1, 0, n + 1)[:-1]
}
TXT2IMG_KEYS = ("prompt", "negative_prompt", "steps", "sampler_name", "sampler_index", "scheduler", "cfg_scale",
                "seed", "width", "height", "batch_size", "n_iter", "override_settings", "send_images")
"""The txt2img keys that are used; any other key is ignored and listed in `info` (`ignored_keys`)."""
IMG2IMG_KEYS = (*TXT2IMG_KEYS, "init_images", "denoising_strength", "mask")
A1111_DENOISING_STRENGTH = 0.75
"""A1111's img2img default, used when a request has no denoising_strength."""
KEY_OF = {"guidance": "cfg_scale", "sampler": "sampler_name", "karras": "scheduler", "timestep_spacing": "scheduler",
          "num_images": "batch_size", "init_image": "init_images", "strength": "denoising_strength",
          "model": "override_settings.sd_model_checkpoint", "size": "width"}
"""Native setting -> the A1111 key a client sets it with (for error messages)."""


def _field_error(field: str, key: str, error: str) -> RequestErrors:
    return RequestErrors([{"field": field, "key": key, "error": error}])


def sampler_of(name: object, scheduler: object) -> dict:
    """Native fields for an A1111 sampler_name (+ scheduler); RequestErrors listing the names otherwise."""
    from ldmkit.diffusion.registry import SAMPLERS as NATIVE

    out: dict = {}
    if name is not None:
        name = ALIASES.get(name, name) if isinstance(name, str) else name
        if not isinstance(name, str) or (name not in SAMPLERS and name not in NATIVE):
            listed = ", ".join([*SAMPLERS, *NATIVE])
            raise _field_error("sampler", "sampler_name", f"unknown sampler {str(name)[:60]!r}; served: {listed}")
        sampler, karras, _ = SAMPLERS.get(name, (name, False, []))
        out["sampler"] = sampler
        if karras:
            out["karras"] = True
    if scheduler is not None:
        by_label = {label.lower(): key for key, (label, _) in SCHEDULERS.items()}
        key = str(scheduler).lower() if isinstance(scheduler, str) else None
        key = key if key in SCHEDULERS else by_label.get(key or "")
        if key is None:
            names = ", ".join(f"{k} ({label})" for k, (label, _) in SCHEDULERS.items())
            raise _field_error("scheduler", "scheduler", f"unknown or unserved scheduler {str(scheduler)[:60]!r}; "
                                                      f"served: {names}")
        out.update(SCHEDULERS[key][1])
    return out


def checkpoint_name(value: object, served: list[str]) -> str | None:
    """The served model an A1111 checkpoint title names: "name", or as A1111 titles are, "name.safetensors [hash]"
    (a checkpoint file is served under its stem)."""
    if not isinstance(value, str):
        return None
    name = value.split(" [", 1)[0] if value.endswith("]") else value
    if name not in served and name.endswith(".safetensors"):
        name = name[:-len(".safetensors")]
    return name if name in served else None


def _count(body: dict, key: str) -> int:
    value = body.get(key)
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100_000:
        raise _field_error("num_images", key, f"must be an integer in 1..100000, got {str(value)[:50]}")
    return value


def to_native(body: object, served: list[str], checkpoint: str, *, img2img: bool = False
              ) -> tuple[dict, list[str]]:
    """An A1111 txt2img/img2img body -> (native job body, ignored keys). `checkpoint` is the model used when
    the body names none (POST /sdapi/v1/options sets it). A key sent as null counts as absent, as in A1111."""
    if not isinstance(body, dict):
        raise RequestErrors([{"field": "body", "error": "expected a JSON object"}])
    known = IMG2IMG_KEYS if img2img else TXT2IMG_KEYS
    ignored = sorted(str(k)[:100] for k in body if k not in known)
    given = {k: v for k, v in body.items() if v is not None}
    native = {"prompt": given.get("prompt", ""), "model": checkpoint}
    for theirs, ours in (("negative_prompt", "negative_prompt"), ("steps", "steps"), ("cfg_scale", "guidance"),
                         ("seed", "seed"), ("width", "width"), ("height", "height")):
        if theirs in given:
            native[ours] = given[theirs]
    native.update(sampler_of(given.get("sampler_name", given.get("sampler_index")), given.get("scheduler")))
    native["num_images"] = _count(given, "batch_size") * _count(given, "n_iter")
    override = given.get("override_settings", {})
    if not isinstance(override, dict):
        raise _field_error("model", "override_settings", "must be a JSON object")
    for key in override:
        if key != "sd_model_checkpoint":
            ignored.append(f"override_settings.{str(key)[:100]}")
    if override.get("sd_model_checkpoint") is not None:
        model = checkpoint_name(override["sd_model_checkpoint"], served)
        if model is None:
            raise _field_error("model", "override_settings.sd_model_checkpoint",
                               f"not a served model; served: {', '.join(served)}")
        native["model"] = model
    if "send_images" in given and not isinstance(given["send_images"], bool):
        raise _field_error("send_images", "send_images", "must be true or false")
    if img2img:
        native.update(_init_image(given))
        ignored += [f"init_images[{i}]" for i in range(1, len(given["init_images"]))]
    return native, ignored


def _init_image(given: dict) -> dict:
    """init_images[0] and denoising_strength (the other init images are not used: listed as ignored).
    Inpainting is refused rather than answered with a whole repainted image."""
    if "mask" in given:
        raise _field_error("init_image", "mask", "inpainting (a mask) is not served; send init_images only")
    images = given.get("init_images")
    if not isinstance(images, list) or not images or len(images) > 1000:
        raise _field_error("init_image", "init_images", "a list of images (base64 or data URLs); the first is used")
    return {"init_image": images[0], "strength": given.get("denoising_strength", A1111_DENOISING_STRENGTH)}


def a1111_errors(err: RequestErrors) -> RequestErrors:
    """Native errors with the A1111 key added to each (`key`), for clients that send A1111 names."""
    out = []
    for e in err.errors:
        field = field_of(e["error"]) if e["field"] == "request" else e["field"]  # a check of two settings
        out.append({**e, "field": field, "key": e.get("key", KEY_OF.get(field, field))})
    return RequestErrors(out, getattr(err, "status", 422))


def sampler_name_of(resolved: dict) -> str:
    """The A1111 name of what ran (A1111 >= 1.9 names the schedule apart: see `scheduler_label_of`)."""
    for name, (sampler, karras, _) in SAMPLERS.items():
        if sampler == resolved.get("sampler") and not karras:
            return name
    return str(resolved.get("sampler"))


def scheduler_label_of(resolved: dict) -> str:
    if resolved.get("karras"):
        return "Karras"
    spacing = resolved.get("timestep_spacing")
    return {"linspace": "Uniform", "trailing": "SGM Uniform"}.get(spacing, "Automatic")


def samplers_list() -> list[dict]:
    """GET /sdapi/v1/samplers: the A1111 names ldmkit serves, then ldmkit's own sampler names."""
    from ldmkit.diffusion.registry import SAMPLERS as NATIVE

    named = [{"name": name, "aliases": [*aliases, sampler], "options": {"scheduler": "karras"} if karras else {}}
             for name, (sampler, karras, aliases) in SAMPLERS.items()]
    return named + [{"name": s, "aliases": [], "options": {"scheduler": "karras"} if spec.karras else {}}
                    for s, spec in NATIVE.items()]


def schedulers_list() -> list[dict]:
    """GET /sdapi/v1/schedulers, in A1111's shape."""
    return [{"name": key, "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for key, (label, _) in SCHEDULERS.items()]
