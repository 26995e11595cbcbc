"""Deterministic train/val/test splits by a hash of the image id.

Each image's split depends only on its own id (never on its captions, on the other images, or on the
order they were read), so adding images never moves an existing one, and all captions of an image land
in the same split. Changing the fractions or the salt does move images: keep them fixed for a project.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ldmkit.errors import UsageError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    """How images are divided between train, val and test."""

    val: float = 0.05
    """Fraction of images in the validation split."""
    test: float = 0.05
    """Fraction of images in the test split; the rest is train."""
    salt: str = ""
    """Mixed into the hash: a different salt gives an independent division of the same images."""

    def __post_init__(self) -> None:
        for name in ("val", "test"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise UsageError(f"split fraction {name} must be in [0, 1], got {value!r}")
        if self.val + self.test > 1.0:
            raise UsageError(f"val + test fractions must be at most 1, got {self.val} + {self.test}")


def unit_hash(image_id: str, salt: str = "") -> float:
    """A number in [0, 1) from SHA-256 of (salt, image id): uniform and the same on every machine."""
    digest = hashlib.sha256(f"{salt}\x00{image_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(image_id: str, spec: SplitSpec = SplitSpec()) -> str:
    """'train', 'val' or 'test' for one image id."""
    u = unit_hash(image_id, spec.salt)
    if u < spec.test:
        return "test"
    if u < spec.test + spec.val:
        return "val"
    return "train"


def split_ids(image_ids, spec: SplitSpec = SplitSpec()) -> dict[str, list[str]]:
    """split name -> the ids in it, each list in the order given."""
    out: dict[str, list[str]] = {name: [] for name in SPLITS}
    for image_id in image_ids:
        out[split_of(image_id, spec)].append(image_id)
    return out


def check_holdout(holdout, where: str = "holdout") -> tuple[dict[str, str], ...]:
    """`holdout` as a tuple of non-empty {column: value} dicts of text; UsageError naming the bad entry."""
    if isinstance(holdout, (str, dict)) or not isinstance(holdout, (list, tuple)):
        raise UsageError(f"{where} must be a list of label combinations such as "
                         f"[{{hair_color: red, accessory: sunglasses}}], got {holdout!r}")
    out = []
    for i, combo in enumerate(holdout):
        if not isinstance(combo, dict) or not combo or not all(
                isinstance(k, str) and k and isinstance(v, str) for k, v in combo.items()):
            raise UsageError(f"{where}[{i}] must be a non-empty mapping of label column -> value (text), got {combo!r}")
        out.append(dict(combo))
    return tuple(out)


def matches_holdout(labels: dict[str, str], holdout) -> bool:
    """Whether `labels` has every column: value of at least one combination in `holdout`."""
    return any(all(labels.get(k) == v for k, v in combo.items()) for combo in holdout)


def split_with_holdout(image_id: str, labels: dict[str, str], spec: SplitSpec = SplitSpec(), holdout=()) -> str:
    """split_of(image_id), except that an image matching a holdout combination is always 'test'.

    Moving only matching images keeps every other image where its hash put it, so a holdout never
    changes the split of images outside it.
    """
    return "test" if matches_holdout(labels, holdout) else split_of(image_id, spec)
