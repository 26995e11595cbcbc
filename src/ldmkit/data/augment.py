"""Training augmentation: caption-aware horizontal flips and small random crops, reproducible.

    config = AugmentConfig()                      # flip p=0.5, crops keeping >= 90% of each side
    x = augment(x, sample.captions, sample.labels, generator, config)   # x: [C, H, W]

A flip is skipped when any caption or label mentions a direction (mirroring "a dog on the left" makes
the caption false) or the labels say the image holds text (mirrored letters). Evaluation uses
`AugmentConfig.off()`. All randomness comes from the torch.Generator passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DIRECTION_WORDS = re.compile(r"\b(?:left|right|clockwise|counterclockwise|anticlockwise|east|west)", re.I)
"""Words whose meaning a mirror image changes ('left', 'rightmost', 'clockwise', ...)."""
TEXT_LABEL_KEYS = ("has_text", "contains_text", "text_in_image", "ocr")
"""Label keys that, when set to a true value, mark an image holding text."""
FALSE_VALUES = frozenset({"", "0", "false", "no", "none", "null"})


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations are applied to training images."""

    flip_p: float = 0.5
    """Probability of a horizontal flip for an image allowed to flip (0 disables flips)."""
    min_crop: float = 0.9
    """Smallest crop side as a fraction of the image side; 1.0 disables random crops."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if not 0.0 < self.min_crop <= 1.0:
            raise ValueError(f"min_crop must be in (0, 1], got {self.min_crop}")

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation (evaluation, validation, caching)."""
        return cls(flip_p=0.0, min_crop=1.0)


def may_flip(captions, labels: dict[str, str]) -> bool:
    """False when a mirror image would contradict a caption or label, or mirror text in the image."""
    if any(DIRECTION_WORDS.search(c) for c in captions):
        return False
    if any(DIRECTION_WORDS.search(v) for v in labels.values()):
        return False
    return not any(labels.get(k, "").strip().lower() not in FALSE_VALUES for k in TEXT_LABEL_KEYS)


def augment(image, captions, labels: dict[str, str], generator, config: AugmentConfig):
    """A randomly flipped (when allowed) and cropped copy of `image` [C, H, W], same size and dtype.

    Draws exactly two uniforms and, when cropping, two more from `generator`, whatever the outcome, so
    the random stream does not depend on the captions.
    """
    import torch

    if image.ndim != 3:
        raise ValueError(f"augment expects one image [C, H, W], got shape {tuple(image.shape)}")
    flip_u, scale_u = torch.rand(2, generator=generator).tolist()
    out = image
    if config.min_crop < 1.0:
        out = random_crop(out, config.min_crop + (1.0 - config.min_crop) * scale_u, generator)
    if flip_u < config.flip_p and may_flip(captions, labels):
        out = torch.flip(out, dims=(-1,))
    return out


def random_crop(image, scale: float, generator):
    """A crop of `scale` times each side at a random position, resized back to the input size."""
    import torch
    import torch.nn.functional as F

    _, height, width = image.shape
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top_u, left_u = torch.rand(2, generator=generator).tolist()
    top, left = int(top_u * (height - ch + 1)), int(left_u * (width - cw + 1))
    crop = image[:, top:top + ch, left:left + cw]
    if (ch, cw) == (height, width):
        return crop.clone()
    resized = F.interpolate(crop[None].float(), size=(height, width), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return resized.to(image.dtype)
