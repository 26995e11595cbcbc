"""What free phrasing costs: two `ldmkit eval` runs (`--prompt-set free-avatars` and `free-avatars-templates`,
same model, data, n and seeds) compared image by image (issue 17).

    gap = phrasing_gap(Path("eval-free"), Path("eval-templates"))   # condition="guidance=7.5" for --sweep runs
    gap["difference"]        # free - templates, mean over images of the per-image accuracy, paired bootstrap CI
    gap["per_word"]          # (column, word) -> accuracy of the free prompts using that word, with the control's

Both runs generate image i from the same seed for the same avatar and are scored on the same attributes, so
the per-image difference isolates the wording; a paired interval is much narrower than two separate ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.evaluation.attributes import is_match, unreliable_attributes
from ldmkit.evaluation.metric_sets import interval
from ldmkit.metrics.bootstrap import bootstrap_ci

SAME = ("model", "data", "split", "n", "seeds", "where", "steps", "sampler", "guidance", "attributes")
"""Settings two runs must share to be compared image by image."""


def phrasing_gap(free_dir: Path, control_dir: Path, *, condition: str | None = None, n_boot: int = 1000,
                 seed: int = 0) -> dict:
    """Per-image paired comparison of one condition of two eval folders (see the module docstring): `condition`
    is its label ("guidance=7.5"), needed when the runs swept several."""
    from PIL import Image

    from ldmkit.evaluation.attributes import split_rule
    from ldmkit.evaluation.avatars_score import find_attribute_classifier
    from ldmkit.evaluation.free_prompts import free_prompt
    from ldmkit.evaluation.run import EvalSettings, _held_out

    runs = [_read(Path(d)) for d in (free_dir, control_dir)]
    names = [run["settings"]["prompt_set"] for run in runs]
    if names != ["free-avatars", "free-avatars-templates"]:
        raise UsageError(f"phrasing_gap compares a free-avatars run with a free-avatars-templates run; got {names}")
    differ = [k for k in SAME if runs[0]["settings"].get(k) != runs[1]["settings"].get(k)]
    if differ:
        raise UsageError(f"the two runs differ in {', '.join(differ)}; rerun them with the same settings")
    index = _condition_index(runs, condition)
    s = runs[0]["settings"]
    settings = EvalSettings(model=Path(s["model"]), data=Path(s["data"]), out=Path("unused"), split=s["split"],
                            n=s["n"], where=s["where"], prompt_set="free-avatars")
    _, _, labels = _held_out(settings, split_rule(settings.model))
    prompts = [free_prompt(row) for row in labels]
    attributes = Path(s["attributes"]) if s.get("attributes") else None
    classifier = find_attribute_classifier(settings.model, attributes)
    if classifier is None:
        raise UsageError(f"{settings.model} has no attribute classifier (and the runs named none)")
    low = unreliable_attributes(classifier.config.accuracy)
    hits = []  # per run: per image {column: hit}
    for run, folder in zip(runs, (free_dir, control_dir)):
        records = run["conditions"][index]["images"]
        images = [Image.open(Path(folder) / r["file"]).convert("RGB") for r in records]
        hits.append(attribute_hits(classifier, images, [prompts[r["prompt_index"]] for r in records]))
    order = [r["prompt_index"] for r in runs[0]["conditions"][index]["images"]]
    if order != [r["prompt_index"] for r in runs[1]["conditions"][index]["images"]]:
        raise UsageError("the two runs evaluated different prompts; rerun them with the same settings")
    scored = [i for i, h in enumerate(hits[0]) if h]
    free = np.array([np.mean(list(hits[0][i].values())) for i in scored])
    control = np.array([np.mean(list(hits[1][i].values())) for i in scored])
    ci = lambda values: interval(bootstrap_ci(np.asarray(values, dtype=float), n_boot=n_boot, seed=seed))  # noqa: E731
    return {"condition": runs[0]["conditions"][index]["label"], "images": len(scored), "excluded": sorted(low),
            "free": ci(free), "templates": ci(control), "difference": ci(free - control),
            "per_attribute": _grouped(hits, scored, lambda i, c: c, ci),
            "per_word": _grouped(hits, scored, lambda i, c: f"{c}: {prompts[order[i]].words[c]}", ci)}


def attribute_hits(classifier, images: list, prompts: list) -> list[dict[str, bool]]:
    """Per image, {column: whether the classifier reads the asked value} for the attributes its free prompt
    (`free_prompts.FreePrompt`) names, leaving out those the classifier reads below 95%."""
    low = unreliable_attributes(classifier.config.accuracy)
    return [{c: is_match(guess.get(c), v) for c, v in prompt.asked.items()
             if c not in low and c in classifier.config.accuracy}
            for prompt, guess in zip(prompts, classifier.predict_images(images))]


def _condition_index(runs: list[dict], condition: str | None) -> int:
    """The index of the condition to compare: the only one, or the one labelled `condition` in both runs."""
    labels = [[c["label"] for c in run["conditions"]] for run in runs]
    if labels[0] != labels[1]:
        raise UsageError(f"the two runs hold different conditions ({labels[0]} vs {labels[1]}); rerun them with "
                         "the same settings")
    if condition is None:
        if len(labels[0]) != 1:
            raise UsageError(f"the runs hold {len(labels[0])} conditions ({', '.join(labels[0])}); choose one "
                             "(--condition LABEL)")
        return 0
    if condition not in labels[0]:
        raise UsageError(f"no condition {condition!r} in the runs; they hold: {', '.join(labels[0])}")
    return labels[0].index(condition)


def _grouped(hits, scored, key, ci) -> dict:
    """{group: {"n", "free", "templates"}}: accuracies over the (image, column) pairs of each group."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for i in scored:
        for column, hit in hits[0][i].items():
            groups.setdefault(key(i, column), []).append((float(hit), float(hits[1][i][column])))
    out = {}
    for name, pairs in sorted(groups.items()):
        free, control = zip(*pairs)
        out[name] = {"n": len(pairs), "free": ci(free) if len(pairs) > 1 else {"estimate": free[0]},
                     "templates": ci(control) if len(pairs) > 1 else {"estimate": control[0]}}
    return out


def _read(folder: Path) -> dict:
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UsageError(f"{folder}: no readable metrics.json of an `ldmkit eval` run ({err})") from None
    return {"settings": metrics["settings"], "conditions": metrics["conditions"]}
