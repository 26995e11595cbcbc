"""DreamBooth (Ruiz et al. 2023) for `ldmkit train unet` (full fine-tune: the whole UNet trains, text encoder and
VAE frozen) and `ldmkit train lora` (adapters): subject images, prior-preservation class images, the two-part loss.

    dataset, card = dreambooth_dataset(components, recipe.dreambooth, run_dir, image_size)   # before any training

The subject ("instance") images come from `dreambooth.instance_data`, every one captioned `instance_prompt` (with
`instance_captions`: also "<instance_prompt>, <its own caption>" for each caption the dataset readers find). With
a `class_prompt`, the base model itself draws `class_images` images of it (image i from seed i) into
RUN/class_images/NNNN.png before training (§3.3 of the paper: the model's own samples, so the class loss holds
its prior where it was). Images are drawn in fixed chunks of 16 and each is written atomically once its chunk is
done: a killed run keeps what it wrote and draws only the incomplete chunks again (the same images: same seeds,
same chunk mates). RUN/class_images/manifest.json records the prompt, sampler settings, image size and base
weights; a run whose recipe or base model no longer matches it is refused, never silently redrawn (the images are
the run's prior). Each training batch holds train.batch_size subject images (the loop's data order) plus as many
class images drawn from the run's generator; loss = instance loss + prior_loss_weight * class loss (eq. 2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from ldmkit.errors import DataError, UsageError
from ldmkit.training.recipes_personal import MAX_INSTANCE_IMAGES, DreamBoothSection

CLASS_FOLDER = "class_images"
CLASS_MANIFEST = "manifest.json"
INSTANCE_PREFIX, CLASS_PREFIX = "instance/", "class/"
GENERATE_CHUNK = 16  # class images sampled together (one UNet batch per step)


def instance_samples(section: DreamBoothSection) -> list:
    """One Sample per image directly inside dreambooth.instance_data (1..100, each decoded once), captioned
    instance_prompt; DataError naming the folder or the unreadable file."""
    from ldmkit.data.dataset import Sample
    from ldmkit.data.images import BadImage, check_image, is_image_name

    folder = Path(section.instance_data)
    if not folder.is_dir():
        raise DataError(f"dreambooth.instance_data {folder} is not a folder of images")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p))
    if not 1 <= len(paths) <= MAX_INSTANCE_IMAGES:
        raise DataError(f"dreambooth.instance_data {folder} holds {len(paths)} images; DreamBooth takes 1.."
                        f"{MAX_INSTANCE_IMAGES} images of the subject")
    for path in paths:
        try:
            check_image(path)
        except BadImage as bad:
            raise DataError(f"{path}: {bad}") from None
    own = instance_captions(folder, paths) if section.instance_captions else {}
    # with its own captions an image keeps the bare instance prompt as one of them: a model taught only
    # "<prompt>, <caption>" does not draw the subject for the bare prompt (measured: docs/personalization.md)
    return [Sample(f"{INSTANCE_PREFIX}{p.name}", p,
                   (section.instance_prompt, *(f"{section.instance_prompt}, {c}" for c in own.get(p.name, ()))), {})
            for p in paths]


def instance_captions(folder: Path, paths: list[Path]) -> dict[str, tuple[str, ...]]:
    """{image name: its captions} read by the dataset readers (sidecar NAME.txt / metadata.jsonl in `folder`);
    DataError naming the first image without a caption or the reader's problems."""
    from ldmkit.data.formats import read_format
    from ldmkit.data.report import BadInputReport

    report = BadInputReport()
    found = {Path(image_id).name: tuple(c for c in captions if c.strip())
             for image_id, _, captions, _ in read_format(folder, report).records}
    missing = [p.name for p in paths if not found.get(p.name)]
    if missing:
        raise DataError(f"dreambooth.instance_captions: {folder / missing[0]} has no caption ({len(missing)} of "
                        f"{len(paths)} images lack one; write NAME.txt beside each image or a metadata.jsonl)")
    return {p.name: found[p.name] for p in paths}


def class_settings(section: DreamBoothSection, base_id: str, sampler: str) -> dict:
    """What decides the class images: prompt, sampler settings (`sampler`: the one drawing them, by name), base
    weights (seeds are 0..N-1)."""
    return {"prompt": section.class_prompt, "sampler": sampler, "steps": section.class_steps,
            "guidance": section.class_guidance, "base_weights": base_id, "seeds": "image i from seed i"}


def class_image_paths(components, section: DreamBoothSection, run_dir: Path, image_size: int) -> list[Path]:
    """RUN/class_images/0000.png.. drawn by `components` (the base model, before any training), reusing those already
    there; UsageError when the folder was drawn with other settings or another base model."""
    from ldmkit.pipeline import Pipeline
    from ldmkit.training.run_data import weights_id

    folder = Path(run_dir) / CLASS_FOLDER
    sampler = section.class_sampler or Pipeline(components).defaults()["sampler"]
    base_id = weights_id(components.unet, components.vae, components.text_encoder.model)
    settings = {**class_settings(section, base_id, sampler), "image_size": image_size}
    manifest = folder / CLASS_MANIFEST
    if manifest.is_file():
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except ValueError:
            found = None
        if found != settings:
            diff = sorted(k for k in settings if not isinstance(found, dict) or found.get(k) != settings[k])
            raise UsageError(f"{folder} holds class images drawn with other settings ({', '.join(diff) or 'manifest'}"
                             "); this run's prior must stay what it was: use a new --out, or move that folder away")
    elif folder.exists() and any(folder.iterdir()):
        raise UsageError(f"{folder} exists without {CLASS_MANIFEST}; not drawing class images over it")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(manifest, json.dumps(settings, indent=1).encode())
    paths = [folder / f"{i:04d}.png" for i in range(section.class_images)]
    # image i is drawn in chunk i // GENERATE_CHUNK, always with the same chunk mates (a batched UNet rounds
    # differently per batch): a chunk missing any image is drawn whole again, so a resumed drawing writes the
    # very images an uninterrupted one does
    chunks = [range(at, min(at + GENERATE_CHUNK, section.class_images))
              for at in range(0, section.class_images, GENERATE_CHUNK)]
    todo = [chunk for chunk in chunks if not all(paths[i].is_file() for i in chunk)]
    if todo:
        _draw(components, section, image_size, todo, paths, sampler)
    return paths


def _draw(components, section: DreamBoothSection, image_size: int, chunks: list[range], paths: list[Path],
          sampler: str) -> None:
    """Sample the class images of `chunks`, writing each image as soon as its chunk is done."""
    import io

    from ldmkit.pipeline import Pipeline

    pipe = Pipeline(components)
    total = sum(len(chunk) for chunk in chunks)
    print(f"dreambooth: drawing {total} class images of {section.class_prompt!r} with the base model", file=sys.stderr)
    done = 0
    for chunk in chunks:
        results = pipe.generate_batch([section.class_prompt] * len(chunk), list(chunk), steps=section.class_steps,
                                      sampler=sampler, guidance=section.class_guidance, width=image_size,
                                      height=image_size)
        for i, result in zip(chunk, results):
            buffer = io.BytesIO()
            result.images[0].save(buffer, format="PNG")
            _write_atomic(paths[i], buffer.getvalue())
        done += len(chunk)
        print(f"dreambooth: {done}/{total} class images", file=sys.stderr)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def dreambooth_dataset(components, section: DreamBoothSection, run_dir: Path, image_size: int):
    """(CaptionDataset of instance + class samples, the card: ldmkit.json `dataset`, or the LoRA's metadata)."""
    from ldmkit.data.dataset import CaptionDataset, Sample
    from ldmkit.data.report import BadInputReport

    samples = instance_samples(section)
    n_class = 0
    if section.class_prompt.strip():
        paths = class_image_paths(components, section, run_dir, image_size)
        samples += [Sample(f"{CLASS_PREFIX}{p.name}", p, (section.class_prompt,), {}) for p in paths]
        n_class = len(paths)
    dataset = CaptionDataset(Path(section.instance_data), "imagefolder", samples, BadInputReport())
    card = {"dreambooth": {"instance_data": str(section.instance_data), "instance_images": len(samples) - n_class,
                           "instance_prompt": section.instance_prompt, "instance_captions": section.instance_captions,
                           "class_prompt": section.class_prompt,
                           "class_images": n_class, "prior_loss_weight": section.prior_loss_weight}}
    print(f"dreambooth: {len(samples) - n_class} subject images ({section.instance_prompt!r}), {n_class} class "
          f"images ({section.class_prompt!r})", file=sys.stderr)
    return dataset, card


class PriorRows:
    """Which cache rows are subject images and which are class images (the cache keeps dataset order)."""

    def __init__(self, image_ids: list[str]) -> None:
        self.instance = [i for i, name in enumerate(image_ids) if name.startswith(INSTANCE_PREFIX)]
        self.prior = [i for i, name in enumerate(image_ids) if name.startswith(CLASS_PREFIX)]
        if not self.instance:
            raise DataError("the latent cache holds no subject images")

    def rows(self, ids: list[int], generator: torch.Generator) -> tuple[list[int], torch.Tensor]:
        """(cache rows: the subject images `ids` then as many class images drawn from `generator`, is-class
        mask [B]); without class images just the subject rows."""
        rows = [self.instance[i] for i in ids]
        if self.prior:
            drawn = torch.randint(0, len(self.prior), (len(ids),), generator=generator)
            rows += [self.prior[int(j)] for j in drawn]
        is_class = torch.zeros(len(rows), dtype=torch.bool)
        is_class[len(ids):] = True
        return rows, is_class


def prior_preservation_loss(per_sample: torch.Tensor, is_class: torch.Tensor, weight: float
                            ) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 2: mean loss of the subject rows + weight * mean loss of the class rows; per_sample [B] (already
    Min-SNR weighted). Without class rows: the subject loss alone."""
    instance = per_sample[~is_class].mean()
    if not bool(is_class.any()):
        return instance, {}
    prior = per_sample[is_class].mean()
    return instance + weight * prior, {"instance_loss": float(instance.detach()), "prior_loss": float(prior.detach())}
