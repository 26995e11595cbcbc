"""Attribute accuracy of generated `avatars` images, read by a trained attribute classifier.

    classifier = find_attribute_classifier(model_dir, None)          # MODEL/attributes/, or None
    asked = [mentioned_values(labels, caption) for ...]              # what each prompt says (data.builtin)
    table = avatars_attribute_scores(classifier.predict_images(images), asked, classifier.config.accuracy,
                                     unseen=[...])                   # all / seen / unseen, bootstrap CIs

A caption mentions only some attributes (template 1 says nothing of glasses; sunglasses hide the
eyes; "default" eyes are not described), so each image is scored only on the attributes its prompt
pins down: the values for which the builder would write the same caption (both "angry" eyebrows
read "angry eyebrows", so either counts as right). Attributes whose classifier is below 95% on real
held-out images, or that it does not know, are excluded and listed, not guessed. The same score on
the real images of the same captions is the ceiling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ldmkit.errors import UsageError
from ldmkit.evaluation.attributes import attribute_accuracy
from ldmkit.metrics.attribute_match import is_match, unreliable_attributes
from ldmkit.metrics.bootstrap import bootstrap_ci

def find_attribute_classifier(model_dir: Path, attributes_path: Path | None):
    """The classifier of `attributes_path` if given (an error when it holds none), else MODEL/attributes/
    if present, else None."""
    from ldmkit.evaluation.features import find_component
    from ldmkit.models.attributes import ATTRIBUTES_FOLDER, load_attribute_classifier

    return find_component(model_dir, attributes_path, option="--attributes", folder=ATTRIBUTES_FOLDER,
                          load=load_attribute_classifier)


def avatars_attribute_scores(predicted: Sequence[Mapping[str, str]], asked: Sequence[Mapping[str, frozenset[str]]],
                             classifier_accuracy: Mapping[str, float], *, unseen: Sequence[bool] | None = None,
                             n_boot: int = 1000, seed: int = 0) -> dict:
    """{"all": table, "seen": table, "unseen": table (the last two with `unseen` flags)} plus "excluded"
    {attribute: classifier accuracy or None when it has no head}.

    A table is {"mean": ci, "per_attribute": {name: ci}, "counts": {name: n}, "images": n} (None when no
    image has a scorable attribute); mean bootstraps images, each contributing its mean over its scored
    attributes; ci = {"estimate", "low", "high"}.
    """
    if len(predicted) != len(asked) or (unseen is not None and len(unseen) != len(asked)):
        raise UsageError(f"attribute scoring pairs predictions with prompts: got {len(predicted)} predictions, "
                         f"{len(asked)} prompts" + (f", {len(unseen)} seen/unseen flags" if unseen is not None else ""))
    mentioned = sorted({name for item in asked for name in item})
    low = unreliable_attributes({k: v for k, v in classifier_accuracy.items() if k in mentioned})
    excluded = {name: (classifier_accuracy.get(name)) for name in mentioned
                if name in low or name not in classifier_accuracy}
    kept = [{k: v for k, v in item.items() if k not in excluded} for item in asked]
    out = {"excluded": excluded, "all": _table(predicted, kept, range(len(kept)), n_boot, seed)}
    if unseen is not None:
        out["seen"] = _table(predicted, kept, [i for i, flag in enumerate(unseen) if not flag], n_boot, seed)
        out["unseen"] = _table(predicted, kept, [i for i, flag in enumerate(unseen) if flag], n_boot, seed)
    return out


def _table(predicted, asked, indices, n_boot: int, seed: int) -> dict | None:
    items = [i for i in indices if asked[i]]
    if not items:
        return None
    table = attribute_accuracy([predicted[i] for i in items], [asked[i] for i in items])
    per_attribute = {}
    for name in table.per_attribute:
        hits = [float(is_match(predicted[i].get(name), asked[i][name])) for i in items if name in asked[i]]
        per_attribute[name] = _ci(hits, n_boot, seed)
    per_image = [np.mean([float(is_match(predicted[i].get(k), v)) for k, v in asked[i].items()]) for i in items]
    return {"mean": _ci(per_image, n_boot, seed), "per_attribute": per_attribute, "counts": dict(table.counts),
            "images": len(items)}


def _ci(values: list[float], n_boot: int, seed: int) -> dict:
    if len(values) == 1:  # one item: no spread to resample
        return {"estimate": values[0], "low": values[0], "high": values[0]}
    ci = bootstrap_ci(np.array(values), n_boot=n_boot, seed=seed)
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high}
