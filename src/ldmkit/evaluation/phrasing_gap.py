"""Two `ldmkit eval` runs of the same held-out avatars compared image by image (issue 17): what free phrasing
costs one model, or how two models differ on the same prompts.

    gap = phrasing_gap(Path("eval-free"), Path("eval-templates"))   # condition="guidance=7.5" for --sweep runs
    gap["difference"]        # free - templates, mean over images of the per-image accuracy, paired bootstrap CI
    gap["per_word"]          # (column, word) -> accuracy of the free prompts using that word, with the control's
    cmp = model_gap(Path("eval-shipped"), Path("eval-candidate"))    # same prompts, seeds and classifier
    cmp["difference"]        # candidate - shipped, paired; cmp["per_attribute"][name]["difference"] likewise

Both runs generate image i from the same seed for the same avatar and are scored on the same attributes, so
the per-image difference isolates what differs (the wording, or the model); a paired interval is much
narrower than two separate ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.metrics.attribute_match import attribute_hits, unreliable_attributes
from ldmkit.evaluation.metric_sets import interval
from ldmkit.metrics.bootstrap import bootstrap_ci

SAME = ("model", "data", "split", "n", "sample_seed", "seeds", "seed_per_image", "where", "steps", "sampler", "guidance",
        "guidance_rescale", "karras", "attributes")
"""Settings two runs must share to be compared image by image (some of them may be allowed to differ)."""
SAMPLING = ("steps", "sampler", "guidance", "guidance_rescale", "karras")
"""The sampling settings model_gap may compare as well as models (None: the model's own default)."""


@dataclass(frozen=True)
class PairedHits:
    """The attribute hits of two eval runs of the same avatars, image by image."""

    condition: str
    """The label of the compared condition."""
    excluded: list[str]
    """Attributes the classifier reads below 95%: not scored."""
    hits: tuple[list[dict[str, bool]], list[dict[str, bool]]]
    """Per run, per image: {column: whether the classifier reads an asked value}."""
    order: list[int]
    """Per image, its prompt index (the same in both runs)."""
    asked: list
    """Per prompt index, what the first run's prompt set asks (free_prompts.FreePrompt, or {column: values})."""

    @property
    def scored(self) -> list[int]:
        """The images with at least one scored attribute."""
        return [i for i, h in enumerate(self.hits[0]) if h]

    def image_means(self, run: int) -> np.ndarray:
        """Per scored image, the share of its scored attributes that run got right."""
        return np.array([np.mean(list(self.hits[run][i].values())) for i in self.scored])


def phrasing_gap(free_dir: Path, control_dir: Path, *, condition: str | None = None, n_boot: int = 1000,
                 seed: int = 0) -> dict:
    """Per-image paired comparison of one condition of two eval folders (see the module docstring): `condition`
    is its label ("guidance=7.5"), needed when the runs swept several."""
    check_free_pair([_read(Path(d))["settings"]["prompt_set"] for d in (free_dir, control_dir)])
    paired = paired_hits(free_dir, control_dir, condition=condition, may_differ=("prompt_set",))
    hits, scored, order = paired.hits, paired.scored, paired.order
    free, control = paired.image_means(0), paired.image_means(1)
    ci = _ci(n_boot, seed)
    return {"condition": paired.condition, "images": len(scored), "excluded": paired.excluded,
            "free": ci(free), "templates": ci(control), "difference": ci(free - control),
            "per_attribute": _grouped(hits, scored, lambda i, c: c, ci),
            "per_word": _grouped(hits, scored, lambda i, c: f"{c}: {paired.asked[order[i]].words[c]}", ci)}


def check_free_pair(names: list[str]) -> None:
    """UsageError unless `names` are a free prompt set and its control, e.g. free-avatars, free-avatars-templates."""
    from ldmkit.evaluation.free_prompts import FREE_SETS

    if len(names) != 2 or names[0] not in FREE_SETS or names[1] != names[0] + "-templates":
        raise UsageError("compares a free prompt set's run with its control's (free-avatars and "
                         f"free-avatars-templates, or free-avatars-new-words and its -templates); got {names}")


def _setting(run: dict, key: str):
    """A run's setting; runs written before eval had --karras or --seed-per-image have them off."""
    return run["settings"].get(key, False if key in ("karras", "seed_per_image") else None)


def model_gap(base_dir: Path, other_dir: Path, *, condition: str | None = None, other_condition: str | None = None,
              n_boot: int = 1000, seed: int = 0) -> dict:
    """Two eval runs on the same prompts, seeds and attribute classifier (`--attributes`, named in both runs) that
    differ in the model, its sampling settings (SAMPLING) or both, compared image by image:
    {"base", "other", "difference" (other - base), "per_attribute", "models", "sampling"}.
    `other_condition` compares one condition of a `--sweep` run with another (of the same folder or another):
    `condition` is then the base's, `other_condition` the other's."""
    runs = [_read(Path(d)) for d in (base_dir, other_dir)]
    indexes = _condition_index(runs, condition, other_condition)
    sampling = [_sampling(run, index) for run, index in zip(runs, indexes)]
    best_of = [run["conditions"][index].get("best_of", 1) for run, index in zip(runs, indexes)]
    if runs[0]["settings"]["model"] == runs[1]["settings"]["model"] and sampling[0] == sampling[1] \
            and best_of[0] == best_of[1]:
        raise UsageError(f"both runs evaluated {runs[0]['settings']['model']} with the same sampling settings; "
                         "model_gap compares two models, or one model with two sampling settings")
    if not runs[0]["settings"].get("attributes"):
        raise UsageError("the runs scored each model with its own attribute classifier; rerun both with the same "
                         "--attributes FOLDER so one instrument reads both")
    if runs[0]["prompts"] != runs[1]["prompts"]:
        raise UsageError("the two runs evaluated different prompts; rerun them with the same settings")
    paired = paired_hits(base_dir, other_dir, condition=condition, other_condition=other_condition,
                         may_differ=("model", *SAMPLING))
    base, other = paired.image_means(0), paired.image_means(1)
    ci = _ci(n_boot, seed)
    per_attribute = {}
    for column in sorted({c for i in paired.scored for c in paired.hits[0][i]}):
        pairs = np.array([(paired.hits[0][i][column], paired.hits[1][i][column]) for i in paired.scored
                          if column in paired.hits[0][i]], dtype=float)
        per_attribute[column] = {"n": len(pairs), "base": ci(pairs[:, 0]), "other": ci(pairs[:, 1]),
                                 "difference": ci(pairs[:, 1] - pairs[:, 0])}
    return {"condition": paired.condition, "images": len(paired.scored), "excluded": paired.excluded,
            "models": [run["settings"]["model"] for run in runs], "sampling": sampling,
            "base": ci(base), "other": ci(other),
            "difference": ci(other - base), "per_attribute": per_attribute}


def _sampling(run: dict, index: int) -> dict:
    """The sampling settings (SAMPLING) one condition of a run used: a `--sweep` condition's own, else the run's."""
    own = run["conditions"][index].get("settings") or {}
    return {k: own[k] if k in own else _setting(run, k) for k in SAMPLING}


def paired_hits(first: Path, second: Path, *, condition: str | None, may_differ: tuple[str, ...],
                other_condition: str | None = None) -> PairedHits:
    """Read two eval folders that share every setting of SAME (and the prompt set) except those of `may_differ`,
    and score the images of one condition of each (`condition` in both, or `condition` of the first and
    `other_condition` of the second) with the same attribute classifier."""
    from PIL import Image

    from ldmkit.evaluation.attributes import split_rule
    from ldmkit.data.builtin.avatar_mentions import mentioned_values
    from ldmkit.evaluation.avatars_score import find_attribute_classifier
    from ldmkit.evaluation.free_prompts import FREE_SETS, free_prompt, free_set
    from ldmkit.evaluation.run import EvalSettings, _held_out

    runs = [_read(Path(d)) for d in (first, second)]
    differ = [k for k in (*SAME, "prompt_set") if k not in may_differ
              and _setting(runs[0], k) != _setting(runs[1], k)]
    if differ:
        raise UsageError(f"the two runs differ in {', '.join(differ)}; rerun them with the same settings")
    indexes = _condition_index(runs, condition, other_condition)
    s = runs[0]["settings"]
    settings = EvalSettings(model=Path(s["model"]), data=Path(s["data"]), out=Path("unused"), split=s["split"],
                            n=s["n"], sample_seed=s.get("sample_seed"), where=s["where"], prompt_set=s["prompt_set"])
    _, captions, labels = _held_out(settings, split_rule(settings.model))
    if s["prompt_set"] == "captions":
        asked = [mentioned_values(row, caption) for row, caption in zip(labels, captions)]
        wanted = asked
    else:
        asked = [free_prompt(row, FREE_SETS[free_set(s["prompt_set"])]) for row in labels]
        wanted = [prompt.asked for prompt in asked]
    attributes = Path(s["attributes"]) if s.get("attributes") else None
    classifier = find_attribute_classifier(settings.model, attributes)
    if classifier is None:
        raise UsageError(f"{settings.model} has no attribute classifier (and the runs named none)")
    low = unreliable_attributes(classifier.config.accuracy)
    hits = []
    for run, folder, index in zip(runs, (first, second), indexes):
        records = run["conditions"][index]["images"]
        images = [Image.open(Path(folder) / r["file"]).convert("RGB") for r in records]
        hits.append(attribute_hits(classifier, images, [wanted[r["prompt_index"]] for r in records]))
    order, other_order = ([r["prompt_index"] for r in run["conditions"][index]["images"]]
                          for run, index in zip(runs, indexes))
    if order != other_order:
        raise UsageError("the two runs evaluated different prompts; rerun them with the same settings")
    labels = [run["conditions"][index]["label"] for run, index in zip(runs, indexes)]
    label = labels[0] if other_condition is None else f"{labels[0]} vs {labels[1]}"
    return PairedHits(label, sorted(low), (hits[0], hits[1]), order, asked)


def _ci(n_boot: int, seed: int):
    """values -> their mean with a bootstrap interval (one value: no spread to resample)."""
    def ci(values) -> dict:
        values = np.asarray(values, dtype=float)
        if len(values) == 1:
            return {"estimate": float(values[0]), "low": float(values[0]), "high": float(values[0])}
        return interval(bootstrap_ci(values, n_boot=n_boot, seed=seed))
    return ci


def _condition_index(runs: list[dict], condition: str | None, other_condition: str | None = None) -> tuple[int, int]:
    """The index in each run of the condition to compare: the only one (its label names the sampling settings,
    which may differ), or the one labelled `condition` in both runs; with `other_condition`, the first run's
    `condition` (or its only one) and the second run's `other_condition`."""
    labels = [[c["label"] for c in run["conditions"]] for run in runs]
    if other_condition is not None:
        return _pick(labels[0], condition), _pick(labels[1], other_condition)
    if condition is None and len(labels[0]) == len(labels[1]) == 1:
        return 0, 0
    if labels[0] != labels[1]:
        raise UsageError(f"the two runs hold different conditions ({labels[0]} vs {labels[1]}); rerun them with "
                         "the same settings (model_gap.py also pairs two named ones: --condition and --other-condition)")
    index = _pick(labels[0], condition)
    return index, index


def _pick(labels: list[str], condition: str | None) -> int:
    """The index of `condition` among a run's condition labels; None picks the only one."""
    if condition is None:
        if len(labels) != 1:
            raise UsageError(f"the runs hold {len(labels)} conditions ({', '.join(labels)}); choose one "
                             "(--condition LABEL)")
        return 0
    if condition not in labels:
        raise UsageError(f"no condition {condition!r} in the runs; they hold: {', '.join(labels)}")
    return labels.index(condition)


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
    try:
        return {"settings": metrics["settings"], "conditions": metrics["conditions"],
                "prompts": metrics["data"]["prompts"]}
    except (KeyError, TypeError) as err:
        raise UsageError(f"{folder}/metrics.json is not an `ldmkit eval` run's (no {err})") from None
