"""Attribute accuracy of generated images, and seen vs unseen attribute combinations.

For datasets with exact labels (cartoon faces, shapes), a classifier predicts each attribute of a
generated image and is compared with the attributes asked for in the prompt:

    table = attribute_accuracy(predicted, asked, exclude=unreliable_attributes(classifier_acc))  # see metrics
    split = compositional_split(train_labels, asked, ["hair", "glasses"])
    attribute_accuracy([predicted[i] for i in split.unseen], [asked[i] for i in split.unseen])

Attributes whose classifier is itself unreliable (accuracy on real images below 95%) measure the
classifier more than the generator, so they are usually excluded from the mean.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ldmkit.errors import UsageError
from ldmkit.metrics.attribute_match import is_match


@dataclass(frozen=True)
class AttributeAccuracy:
    """Per-attribute accuracy of predicted labels against the asked-for labels."""

    mean: float
    """Unweighted mean of per_attribute (every attribute counts the same, whatever its item count)."""
    per_attribute: dict[str, float]
    """Attribute -> fraction of items whose predicted value equals the true value."""
    counts: dict[str, int]
    """Attribute -> number of items that have a true value for it."""
    excluded: tuple[str, ...]
    """Attributes present in the true labels but left out of the table and the mean (sorted)."""

    def __post_init__(self):
        if set(self.per_attribute) != set(self.counts):
            raise UsageError("AttributeAccuracy.per_attribute and .counts must name the same attributes")
        if any(not 0 <= value <= 1 for value in self.per_attribute.values()):
            raise UsageError("AttributeAccuracy.per_attribute values must be fractions in [0, 1]")
        if set(self.excluded) & set(self.per_attribute):
            raise UsageError("an attribute cannot be both excluded and in the table")


@dataclass(frozen=True)
class CompositionalSplit:
    """Indices of evaluation items whose attribute combination was / was not seen in training."""

    attributes: tuple[str, ...]
    """The attributes whose joint values form a combination."""
    seen: tuple[int, ...]
    """Indices of evaluation items whose combination occurs in the training labels."""
    unseen: tuple[int, ...]
    """Indices of evaluation items whose combination never occurs in the training labels."""

    def __post_init__(self):
        if not self.attributes:
            raise UsageError("CompositionalSplit needs at least one attribute")
        if set(self.seen) & set(self.unseen):
            raise UsageError("an item cannot be both seen and unseen")


def attribute_accuracy(predicted: Sequence[Mapping[str, object]], true: Sequence[Mapping[str, object]], *,
                       exclude: Collection[str] = ()) -> AttributeAccuracy:
    """Compare predicted[i] with true[i] for every attribute that true[i] has.

    A prediction missing an attribute counts as wrong; an item without a true value for an
    attribute is not counted for it. A true value may be a frozenset of acceptable values (a caption
    that cannot tell two values apart): the prediction is right when it is one of them. Names in `exclude` that no item has are ignored (they are not
    listed in .excluded, which shows what was actually left out).
    """
    if len(predicted) != len(true):
        raise UsageError(f"got {len(predicted)} predicted and {len(true)} true label dicts; they pair up by index")
    if isinstance(exclude, str):
        raise UsageError(f"exclude must be a collection of attribute names, not the string {exclude!r}")
    correct: dict[str, int] = {}
    counts: dict[str, int] = {}
    for index, (guess, truth) in enumerate(zip(predicted, true)):
        if not isinstance(guess, Mapping) or not isinstance(truth, Mapping):
            raise UsageError(f"item {index}: labels must be dicts of attribute -> value; "
                             f"got {type(guess).__name__} and {type(truth).__name__}")
        for name, value in truth.items():
            counts[name] = counts.get(name, 0) + 1
            correct[name] = correct.get(name, 0) + int(name in guess and is_match(guess[name], value))
    excluded = tuple(sorted(set(exclude) & set(counts)))
    kept = sorted(set(counts) - set(excluded))
    if not kept:
        raise UsageError(f"no attribute left to score: true labels have {sorted(counts)}, excluded {sorted(exclude)}")
    per_attribute = {name: correct[name] / counts[name] for name in kept}
    return AttributeAccuracy(mean=sum(per_attribute.values()) / len(per_attribute), per_attribute=per_attribute,
                             counts={name: counts[name] for name in kept}, excluded=excluded)


def combination(labels: Mapping[str, object], attributes: Sequence[str], *, where: str = "labels") -> tuple:
    """The values of `attributes` in labels, in order: the key of a compositional split."""
    missing = [name for name in attributes if name not in labels]
    if missing:
        raise UsageError(f"{where} lacks attribute(s) {missing}; has {sorted(labels)}")
    return tuple(labels[name] for name in attributes)


def compositional_split(train_labels: Iterable[Mapping[str, object]], eval_labels: Sequence[Mapping[str, object]],
                        attributes: Sequence[str]) -> CompositionalSplit:
    """Split evaluation items by whether their combination of `attributes` occurs in the training labels.

    Each single value may well occur in training ("red" and "square" both seen); only the joint
    combination decides, which is what compositional generalisation is about.
    """
    if isinstance(attributes, str):
        raise UsageError(f"attributes must be a list of names, not the string {attributes!r}")
    attributes = tuple(attributes)
    if not attributes or len(set(attributes)) != len(attributes):
        raise UsageError(f"attributes must be distinct attribute names; got {attributes!r}")
    seen_combinations = {combination(labels, attributes, where=f"training item {i}")
                         for i, labels in enumerate(train_labels)}
    keys = [combination(labels, attributes, where=f"evaluation item {i}") for i, labels in enumerate(eval_labels)]
    seen = tuple(i for i, key in enumerate(keys) if key in seen_combinations)
    unseen = tuple(i for i, key in enumerate(keys) if key not in seen_combinations)
    return CompositionalSplit(attributes=attributes, seen=seen, unseen=unseen)


@dataclass(frozen=True)
class SplitRule:
    """How the evaluated dataset is split: the model's own training split when its ldmkit.json records one."""

    val: float = 0.05
    """Fraction of images in val (by image-id hash)."""
    test: float = 0.05
    """Fraction of images in test (by image-id hash)."""
    holdout: tuple[dict[str, str], ...] = ()
    """Label combinations moved to test and never trained on: the "unseen" images."""
    source: str = "default"
    """Where the rule comes from: "default" or the ldmkit.json it was read from."""

    def __post_init__(self) -> None:
        if not (0 <= self.val <= 1 and 0 <= self.test <= 1 and self.val + self.test <= 1):
            raise UsageError(f"SplitRule fractions must be in [0, 1] and sum to at most 1; got val={self.val}, "
                             f"test={self.test}")

    def split(self, dataset, name: str):
        """Split `name` of `dataset` under this rule."""
        from ldmkit.data.splits import SplitSpec

        return dataset.split(name, SplitSpec(val=self.val, test=self.test), self.holdout)

    def describe(self) -> dict:
        return {"val": self.val, "test": self.test, "holdout": list(self.holdout), "source": self.source}


def split_rule(model_dir) -> SplitRule:
    """The split the model was trained with (training.data of MODEL/ldmkit.json: val/test fractions and
    holdout), so eval's test split holds no training image; the default SplitSpec when none is recorded."""
    from pathlib import Path

    from ldmkit.data.splits import check_holdout
    from ldmkit.models.folder import META_FILE, recorded

    meta = Path(model_dir) / META_FILE
    data = recorded(model_dir, "training", "data")
    try:
        val, test = float(data["val_fraction"]), float(data["test_fraction"])
    except (ValueError, KeyError, TypeError):
        return SplitRule()
    return SplitRule(val=val, test=test, holdout=check_holdout(tuple(data.get("holdout") or ()), f"{meta}: holdout"),
                     source=str(meta))
