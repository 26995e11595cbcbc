"""Writing generated images: names from the prompt, never overwriting, parameters inside the PNG.

The PNG text chunk "parameters" follows the AUTOMATIC1111 convention, so other tools can read it:

    a red circle
    Negative prompt: blurry
    Steps: 20, Sampler: dpmpp_2m, CFG scale: 7.5, Seed: 3, Size: 64x64, Model hash: 1a2b3c4d
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

from PIL import Image, PngImagePlugin

from ldmkit.errors import UsageError
from ldmkit.pipeline.limits import MAX_PNG_TEXT_CHARS
from ldmkit.pipeline.txt2img import GenerationParams


def slugify(text: str, max_len: int = 48) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "image"


def parameters_text(p: GenerationParams) -> str:
    fields = [f"Steps: {p.steps}", f"Sampler: {p.sampler}", f"CFG scale: {p.guidance:g}", f"Seed: {p.seed}",
              f"Size: {p.width}x{p.height}"]
    if p.guidance_rescale:
        fields.append(f"CFG rescale: {p.guidance_rescale:g}")
    if p.strength is not None:
        fields.append(f"Denoising strength: {p.strength:g}")
    if p.karras:
        fields.append("Schedule type: Karras")
    if p.timestep_spacing:
        fields.append(f"Timestep spacing: {p.timestep_spacing}")
    if p.model_hash:
        fields.append(f"Model hash: {p.model_hash}")
    if p.model_name:
        fields.append(f"Model: {p.model_name}")
    lora_hashes = ", ".join(f"{name}: {h}" for name, _, h in p.loras if h)
    if lora_hashes:  # A1111's infotext: <lora:NAME:SCALE> in the prompt, hashes in a quoted field (issue 16)
        fields.append("Lora hashes: " + _quoted(lora_hashes))
    if p.embeddings:  # as A1111: the embeddings the prompts use (chosen by the tokenizer, result.with_adapters)
        fields.append("TI hashes: " + _quoted(", ".join(f"{token}: {h}" for token, h in p.embeddings)))
    lines = [p.prompt + "".join(f" <lora:{name}:{scale:g}>" for name, scale, _ in p.loras)]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    lines.append(", ".join(fields))
    return _bounded("\n".join(lines))


def _quoted(value: str) -> str:
    """A field value as A1111 writes it: JSON-quoted when it holds a comma, colon or newline."""
    return json.dumps(value, ensure_ascii=False) if any(c in value for c in ",:\n") else value


_FIELD = re.compile(r'\s*([\w][\w \-/]*):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')
_LORA_TAG = re.compile(r"\s*<lora:([^:>]+):([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)>")


def _bounded(text: str, limit: int = MAX_PNG_TEXT_CHARS) -> str:
    """The text chunk never exceeds `limit` characters (prompts are bounded already; a long model name is not)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_output_dir(out_dir: Path) -> None:
    """Refuse, before any work, an output folder that is a file or that cannot be created or written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder; give a folder for the images")
    existing = out_dir
    while not existing.exists():  # the nearest folder that exists is where the new ones would be made
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"-o {out_dir}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"-o {out_dir}: no permission to write in {existing}")


def parse_parameters(text: str) -> dict[str, str]:
    """Read back what `parameters_text` wrote: prompt, negative prompt and the key: value fields."""
    lines = text.split("\n")
    out = {"prompt": _LORA_TAG.sub("", lines[0])}  # what the text encoder saw; the tags: parse_adapters
    for line in lines[1:]:
        if line.startswith("Negative prompt: "):
            out["negative_prompt"] = line[len("Negative prompt: "):]
        else:
            for key, value in _FIELD.findall(line):
                out[key] = json.loads(value) if value.startswith('"') else value.strip()
    return out


def parse_adapters(text: str) -> dict[str, list]:
    """The LoRA files and embeddings a parameters text names: {"loras": [(name, scale, hash or "")],
    "embeddings": [(token, hash)]}, from its <lora:NAME:SCALE> tags and Lora hashes / TI hashes fields."""
    fields = parse_parameters(text)

    def pairs(key: str) -> dict[str, str]:
        items = (item.rpartition(":") for item in fields.get(key, "").split(",") if ":" in item)
        return {name.strip(): h.strip() for name, _, h in items}

    hashes = pairs("Lora hashes")
    loras = [(name, float(scale), hashes.get(name, "")) for name, scale in _LORA_TAG.findall(text.split("\n")[0])]
    return {"loras": loras, "embeddings": list(pairs("TI hashes").items())}


def unused_path(out_dir: Path, stem: str, suffix: str = ".png") -> Path:
    """`stem.png`, else `stem-1.png`, `stem-2.png`, ...: an existing file is never replaced."""
    path, n = out_dir / f"{stem}{suffix}", 0
    while path.exists():
        n += 1
        path = out_dir / f"{stem}-{n}{suffix}"
    return path


def save_image(image: Image.Image, params: GenerationParams, out_dir: Path) -> Path:
    """Write one image with its parameters; the file is created exclusively (no overwrite race)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters_text(params))
    stem = f"{slugify(params.prompt)}-{params.seed}"
    while True:
        path = unused_path(out_dir, stem)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", pnginfo=info)
        return path


def save_result(result, out_dir: Path) -> list[Path]:
    """Save every image of a GenerationResult; image k carries seed + k."""
    return [save_image(img, replace(result.params, seed=seed), out_dir)
            for img, seed in zip(result.images, result.seeds)]
