"""Whether a classifier reads back the attributes a prompt asked for: what `ldmkit eval` and the evaluation inside
UNet training both count (a frozenset of acceptable values matches any of them; attributes the classifier
itself reads below 95% on real images measure the classifier more than the generator and are left out).

    hits = attribute_hits(classifier, images, [{"hair_color": frozenset({"red"}), ...}, ...])
    hits[i]        # {column: bool} for the reliable attributes image i's prompt asks for
"""

from __future__ import annotations

from collections.abc import Mapping

from ldmkit.errors import UsageError

RELIABLE_CLASSIFIER_ACCURACY = 0.95


def is_match(predicted: object, true: object) -> bool:
    """predicted == true, or predicted in true when true is a frozenset of acceptable values."""
    return predicted in true if isinstance(true, frozenset) else predicted == true


def unreliable_attributes(classifier_accuracy: Mapping[str, float], *,
                          threshold: float = RELIABLE_CLASSIFIER_ACCURACY) -> frozenset[str]:
    """Attributes whose classifier accuracy (on real, labelled images) is below threshold."""
    if not 0 < threshold <= 1:
        raise UsageError(f"threshold must be in (0, 1]; got {threshold!r}")
    for name, value in classifier_accuracy.items():
        if not 0 <= value <= 1:
            raise UsageError(f"classifier accuracy of {name!r} must be a fraction in [0, 1]; got {value!r}")
    return frozenset(name for name, value in classifier_accuracy.items() if value < threshold)


def attribute_hits(classifier, images: list, asked: list) -> list[dict[str, bool]]:
    """Per image, {column: whether the classifier reads one of the asked values} for the attributes its prompt
    asks for (`asked[i]`: {column: allowed values}), leaving out those the classifier reads below 95%."""
    low = unreliable_attributes(classifier.config.accuracy)
    return [{c: is_match(guess.get(c), v) for c, v in wanted.items()
             if c not in low and c in classifier.config.accuracy}
            for wanted, guess in zip(asked, classifier.predict_images(images))]
