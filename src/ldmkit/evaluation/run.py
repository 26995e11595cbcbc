"""`ldmkit eval`: generate images for held-out captions and measure them against the real images.

    settings = EvalSettings(model=Path("model"), data=Path("data/shapes"), out=Path("eval"),
                            n=64, seeds=(0,), sweep=Sweep("guidance", (1.0, 3.0, 7.5)))
    metrics = evaluate(settings)                          # writes eval/metrics.json and eval/report.html

One *condition* is one sweep value (and, with best_of > 1, with and without best-of-K reranking).
Every condition generates one image per (caption, seed) and is scored with the dual encoder
(CLIP score, prompt retrieval, FD / KID / CMMD against the split's real images), for `shapes` with
the exact attribute reader, and for `avatars` rows with the attribute classifier (MODEL/attributes/ or
--attributes), seen and unseen attribute combinations apart. The split is the one the model was trained
with (its ldmkit.json), so test images were never trained on. Every number carries a bootstrap 95%
interval. The real images give the references: their own alignment scores (a ceiling) and real-vs-real
fidelity on two disjoint halves (a floor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ldmkit.errors import DataError, ModelFolderError, UsageError
from ldmkit.evaluation.attributes import SplitRule, split_rule
from ldmkit.evaluation.framing import reference_framing
from ldmkit.evaluation.features import find_dual_encoder, image_embeddings, long_captions
from ldmkit.evaluation.metric_sets import (alignment_metrics, fidelity_metrics, real_vs_real, run_environment,
                                           write_json)
from ldmkit.evaluation.shapes_score import is_shapes_dataset, shapes_attribute_scores
from ldmkit.evaluation.settings import EvalSettings, Sweep, parse_sweep, sampling_fields, settings_dict
from ldmkit.pipeline.settings import SamplingSettings

METRICS_FILE = "metrics.json"


@dataclass
class Condition:
    """The images of one condition and where they are saved."""

    label: str
    sweep_value: object
    best_of: int
    kwargs: dict
    sampling: SamplingSettings
    images: list = field(default_factory=list)
    records: list[dict] = field(default_factory=list)


def evaluate(settings: EvalSettings) -> dict:
    """Run the evaluation, write OUT/metrics.json and OUT/report.html, and return the metrics dict."""
    from ldmkit.evaluation.report import write_report

    rule = split_rule(settings.model)
    framing = reference_framing(settings.model, settings.fit)
    held_out, prompts, labels = _held_out(settings, rule)
    asked = None
    if settings.prompt_set != "captions":  # free phrasings of the same held-out avatars (issue 17)
        from ldmkit.evaluation.free_prompts import prompt_set

        prompts, asked = prompt_set(settings.prompt_set, labels)
    out = _prepare_out(settings.out)
    from ldmkit.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(settings.model)
    dual = find_dual_encoder(settings.model, settings.clip)
    notes: list[str] = []
    if dual is None:
        if settings.best_of > 1:
            raise ModelFolderError(f"--best-of {settings.best_of} reranks with a dual encoder, but {settings.model} "
                                   "has no clip/ folder; pass --clip FOLDER or train one (`ldmkit train clip`)")
        notes.append(f"no dual encoder: {settings.model} has no clip/ and no --clip was given, so CLIP score, "
                     "retrieval, FD, KID and CMMD are skipped")
    size = pipe.components.image_size
    real = [framing(held_out.image(i), size) for i in range(len(held_out))]
    metrics = {"settings": settings_dict(settings), "environment": run_environment(settings.model, dual, settings.clip),
               "data": {"root": str(settings.data), "split": settings.split, "images_in_split": len(held_out),
                        "evaluated_images": len(prompts), "distinct_prompts": len(set(prompts)),
                        "image_size": size, "reference_framing": framing.describe(), "where": settings.where,
                        "split_rule": rule.describe(), "prompt_set": settings.prompt_set, "prompts": prompts},
               "notes": notes}
    if pipe.components.meta.get("training_eval"):  # the curve `unet.eval_clip` logged while training
        metrics["training_eval"] = pipe.components.meta["training_eval"]
    metrics["text_limits"] = _text_limits(pipe, dual, prompts)
    shapes = is_shapes_dataset(settings.data)
    reference: dict = {}
    if dual is not None:
        real_emb = image_embeddings(dual, real)
        reference["real_vs_real"] = real_vs_real(real_emb, settings.n_boot, settings.boot_seed, notes)
        reference["real_images"] = alignment_metrics(dual, real_emb[:len(prompts)], prompts, list(range(len(prompts))),
                                                     settings.n_boot, settings.boot_seed)
    if shapes:
        reference.setdefault("real_images", {})["shapes"] = shapes_attribute_scores(
            real[:len(prompts)], labels, n_boot=settings.n_boot, seed=settings.boot_seed)
    avatars = _avatars_scorer(settings, rule, prompts, labels, notes, asked)
    if avatars is not None:
        reference.setdefault("real_images", {})["avatars"] = avatars(real[:len(prompts)], range(len(prompts)))
    reference["vae_round_trip"] = _round_trip_reference(pipe, dual, real[:len(prompts)], prompts, labels, shapes,
                                                        avatars, settings)
    metrics["reference"] = reference
    conditions = []
    for condition in _conditions(settings):
        _generate(pipe, dual, condition, prompts, settings, out)
        result = {"label": condition.label, "sweep_value": condition.sweep_value, "best_of": condition.best_of,
                  "settings": condition.kwargs, "images": condition.records, "metrics": {}}
        own = [record["prompt_index"] for record in condition.records]
        if dual is not None:
            emb = image_embeddings(dual, condition.images)
            result["metrics"].update(alignment_metrics(dual, emb, prompts, own, settings.n_boot, settings.boot_seed))
            result["metrics"].update(fidelity_metrics(emb, real_emb, settings.n_boot, settings.boot_seed, notes))
        if shapes:
            result["metrics"]["shapes"] = shapes_attribute_scores(
                condition.images, [labels[i] for i in own], n_boot=settings.n_boot, seed=settings.boot_seed)
        if avatars is not None:
            result["metrics"]["avatars"] = avatars(condition.images, own)
        conditions.append(result)
    metrics["conditions"] = conditions
    write_json(out / METRICS_FILE, metrics)
    write_report(metrics, out)
    return metrics


def _round_trip_reference(pipe, dual, real: list, prompts: list[str], labels: list[dict], shapes: bool, avatars,
                          settings: EvalSettings) -> dict:
    """The evaluated real images after a VAE encode -> decode, scored like generated images: the best any
    UNet on this autoencoder could reach (a ceiling below the real images' when the VAE loses detail)."""
    images = vae_round_trip(pipe, real)
    own = list(range(len(prompts)))
    out: dict = {"images": len(images)}
    if dual is not None:
        out.update(alignment_metrics(dual, image_embeddings(dual, images), prompts, own, settings.n_boot,
                                     settings.boot_seed))
    if shapes:
        out["shapes"] = shapes_attribute_scores(images, labels, n_boot=settings.n_boot, seed=settings.boot_seed)
    if avatars is not None:
        out["avatars"] = avatars(images, own)
    return out


def vae_round_trip(pipe, images: list, batch: int = 32) -> list:
    """PIL images -> VAE posterior mean -> decoded PIL images (same size)."""
    import torch

    from ldmkit.data.images import to_pil, to_pixels

    decoded = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            pixels = torch.cat([to_pixels(image) for image in images[start:start + batch]])
            decoded += to_pil(pipe.decode(pipe.encode_pixels(pixels)))
    return decoded


def _prepare_out(out: Path) -> Path:
    """Create OUT; an existing non-empty folder is refused (user files are never replaced)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"output folder {out} exists and is not empty; choose a new folder "
                         "(ldmkit never replaces files it did not just write)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _held_out(settings: EvalSettings, rule: SplitRule):
    """(split dataset restricted to `where`, the n chosen images first; the first caption of each chosen image,
    their labels)."""
    from ldmkit.data.dataset import CaptionDataset

    held_out = rule.split(CaptionDataset.open(settings.data), settings.split)
    if settings.where:
        held_out = held_out.subset(s for s in held_out.samples
                                   if all(s.labels.get(k) == v for k, v in settings.where.items()))
    if settings.prompt_set != "captions":  # free avatars prompts: only avatars rows (also in a mixture)
        from ldmkit.data.builtin.avatars import is_avatars_row

        held_out = held_out.subset(s for s in held_out.samples if is_avatars_row(s.labels))
    if len(held_out) < 2:
        where = f" with labels {settings.where}" if settings.where else ""
        raise DataError(f"the {settings.split!r} split of {settings.data} has {len(held_out)} image(s){where}; the "
                        "metrics need at least 2 (use a larger dataset, another --split or --where)")
    chosen = held_out.samples[:settings.n]
    if settings.sample_seed is not None and settings.n >= len(held_out):
        raise UsageError(f"--sample-seed has no effect: --n {settings.n} takes all {len(held_out)} images of the "
                         f"{settings.split!r} split{' with these labels' if settings.where else ''}; leave it out")
    if settings.sample_seed is not None:
        import random

        picked = set(random.Random(settings.sample_seed).sample(range(len(held_out)), settings.n))
        chosen = [s for i, s in enumerate(held_out.samples) if i in picked]
        # the chosen images first: real[:n] are their real images, the rest stay in the real-vs-real reference
        held_out = held_out.subset(chosen + [s for i, s in enumerate(held_out.samples) if i not in picked])
    return held_out, [s.captions[0] for s in chosen], [dict(s.labels) for s in chosen]


def _avatars_scorer(settings: EvalSettings, rule: SplitRule, prompts: list[str], labels: list[dict], notes: list[str],
                    asked: list[dict] | None = None):
    """score(images, prompt_indices) -> the avatars attribute table, or None when there is nothing to score;
    `asked` (what each prompt asks for) defaults to what the builder's caption pins down."""
    from ldmkit.data.splits import matches_holdout
    from ldmkit.data.builtin.avatar_mentions import mentioned_values
    from ldmkit.evaluation.avatars_score import avatars_attribute_scores, find_attribute_classifier

    if asked is None:
        asked = [mentioned_values(row, prompt) for row, prompt in zip(labels, prompts)]
    if not any(asked):
        if settings.attributes is not None:
            notes.append(f"--attributes {settings.attributes}: no evaluated prompt is an avatars caption, "
                         "nothing to score")
        return None
    classifier = find_attribute_classifier(settings.model, settings.attributes)
    if classifier is None:
        notes.append(f"{sum(map(bool, asked))} avatars prompts, but {settings.model} has no attributes/ and no "
                     "--attributes was given: attribute accuracy is skipped (train one: `ldmkit train attributes`)")
        return None
    unseen = [matches_holdout(row, rule.holdout) for row in labels]

    def score(images, indices) -> dict:
        indices = list(indices)
        return avatars_attribute_scores(classifier.predict_images(images), [asked[i] for i in indices],
                                        classifier.config.accuracy, unseen=[unseen[i] for i in indices],
                                        n_boot=settings.n_boot, seed=settings.boot_seed)

    return score


def _conditions(settings: EvalSettings) -> list[Condition]:
    base = sampling_fields(settings)
    values = settings.sweep.values if settings.sweep else (None,)
    ks = (1, settings.best_of) if settings.best_of > 1 else (1,)
    # the label says what was overridden (`is not False`: karras off is the default, guidance_rescale 0.0 is not)
    fixed = ", ".join(f"{k}={v}" for k, v in base.items() if v is not None and v is not False)
    out = []
    for value in values:
        kwargs = dict(base)
        if settings.sweep:
            kwargs[settings.sweep.name] = value
        for k in ks:
            label = f"{settings.sweep.name}={value}" if settings.sweep else (fixed or "model defaults")
            out.append(Condition(label + (f", best-of-{k}" if k > 1 else ""), value, k, kwargs,
                                 SamplingSettings(**kwargs)))
    return out


def image_seed(settings: EvalSettings, seed: int, index: int, count: int) -> int:
    """The generation seed of caption `index`'s image for `seed` (of `count` captions): `seed` itself, or with
    --seed-per-image seed*count + index, distinct for every (caption, seed)."""
    return seed * count + index if settings.seed_per_image else seed


def _generate(pipe, dual, condition: Condition, prompts: list[str], settings: EvalSettings, out: Path) -> None:
    """Fill condition.images and .records (prompt by prompt, seeds inner), saving each image under
    OUT/images/<condition>/. Without reranking the images are sampled `settings.batch` at a time."""
    from ldmkit.pipeline.output import slugify
    from ldmkit.pipeline.rerank import rerank_best_of

    folder = out / "images" / slugify(condition.label, max_len=60)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(index, prompt, image_seed(settings, seed, index, len(prompts)))
            for index, prompt in enumerate(prompts) for seed in settings.seeds]
    if condition.best_of > 1:
        results = [rerank_best_of(pipe, dual, prompt, condition.best_of, seed=seed * condition.best_of,
                                  **condition.kwargs) for _, prompt, seed in jobs]
    else:
        chunks = [jobs[at:at + settings.batch] for at in range(0, len(jobs), settings.batch)]
        results = [result for chunk in chunks for result in pipe.generate_batch(
            [prompt for _, prompt, _ in chunk], [seed for _, _, seed in chunk], condition.sampling)]
    for (index, prompt, _), result in zip(jobs, results):
        record = {"prompt_index": index, "prompt": prompt}
        if condition.best_of > 1:
            record["rerank_scores"] = result.scores
        path = folder / f"{index:04d}-seed{result.seeds[0]}.png"
        result.images[0].save(path)
        record.update(seed=result.seeds[0], file=path.relative_to(out).as_posix(),
                      steps=result.params.steps, sampler=result.params.sampler, guidance=result.params.guidance,
                      guidance_rescale=result.params.guidance_rescale, karras=result.params.karras)
        condition.images.append(result.images[0])
        condition.records.append(record)


def _text_limits(pipe, dual, prompts: list[str]) -> dict:
    """Captions longer than what the generator's and the scorer's text encoders read: counted, not hidden."""
    generator = [p for p in dict.fromkeys(prompts) if pipe.text_encoder.dropped_tokens(p) > 0]
    out = {"generator_max_tokens": pipe.text_encoder.max_length, "generator_truncated": len(generator),
           "generator_truncated_examples": generator[:5]}
    if dual is not None:
        scorer = long_captions(dual, prompts)
        out.update(scorer_max_tokens=dual.text_encoder.max_length, scorer_truncated=len(scorer),
                   scorer_truncated_examples=scorer[:5])
    return out


__all__ = ["EvalSettings", "Sweep", "parse_sweep", "evaluate", "METRICS_FILE"]
