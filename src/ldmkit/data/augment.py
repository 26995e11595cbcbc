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
MIRROR_WORDS = re.compile(r"\b(left|right)(most|ward|wards|hand|handed)?\b|\b(counter-?clockwise|anti-?clockwise|clockwise)\b",
                          re.I)
"""Words a mirror turns into their opposite: left/right (+ -most, -ward(s), -hand(ed)) and the turning sense."""
UNMIRRORABLE = re.compile(r"\b(?:east|west)(?:ward|wards|ern)?\b", re.I)
"""Directions a mirror contradicts that have no safe swap (a map's east stays east): such images never flip."""


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


def mirror_caption(caption: str) -> str:
    """`caption` as it reads for the mirrored image: 'left' <-> 'right' (whole words, any case, also
    leftmost/rightward/left-hand...), clockwise <-> counterclockwise. Other text is unchanged."""
    def swap(match: re.Match) -> str:
        word = match.group(0)
        if match.group(1):
            opposite = {"left": "right", "right": "left"}[match.group(1).lower()] + (match.group(2) or "")
        else:
            opposite = "clockwise" if word.lower().replace("-", "") in ("counterclockwise", "anticlockwise") \
                else "counterclockwise"
        return _same_case(word, opposite)

    return MIRROR_WORDS.sub(swap, caption)


def _same_case(original: str, word: str) -> str:
    if original.isupper() and len(original) > 1:
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def may_mirror(captions, labels: dict[str, str]) -> bool:
    """False when mirroring cannot be made true by swapping words (east/west in a caption) or the labels
    say the image holds text (mirrored letters)."""
    if any(UNMIRRORABLE.search(c) for c in captions):
        return False
    return not any(labels.get(k, "").strip().lower() not in FALSE_VALUES for k in TEXT_LABEL_KEYS)


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


def random_resized_crop(image, scale: float, focus: tuple[float, float], generator):
    """A window of `scale` times each side, at a random place that keeps `focus` (x, y as fractions of the
    image) in its middle half where the image allows, resized back to the input size. Two uniforms drawn."""
    import torch
    import torch.nn.functional as F

    _, height, width = image.shape
    ch, cw = max(1, round(height * scale)), max(1, round(width * scale))
    top = _start(torch.rand((), generator=generator).item(), focus[1] * height, ch, height)
    left = _start(torch.rand((), generator=generator).item(), focus[0] * width, cw, width)
    crop = image[:, top:top + ch, left:left + cw]
    if (ch, cw) == (height, width):
        return crop.clone()
    resized = F.interpolate(crop[None].float(), size=(height, width), mode="bilinear",
                            align_corners=False, antialias=True)[0]
    return resized.to(image.dtype)


def _start(u: float, point: float, window: int, side: int) -> int:
    """A start in [0, side - window] such that `point` lies in [start + window/4, start + 3 window/4]
    (clipped to what the image allows), chosen by the uniform u."""
    lo = min(max(point - 0.75 * window, 0.0), side - window)
    hi = min(max(point - 0.25 * window, 0.0), side - window)
    return int(round(lo + u * (hi - lo)))


def colour_jitter(image, strength: float, generator):
    """Brightness, contrast and saturation of an image in [-1, 1] each scaled by a factor in
    [1 - strength, 1 + strength] (three uniforms drawn, always); the result is clamped to [-1, 1]."""
    import torch

    b, c, s = (1.0 + strength * (2 * torch.rand(3, generator=generator) - 1)).tolist()
    x = (image + 1) / 2 * b
    x = (x - x.mean()) * c + x.mean()
    grey = x.mean(dim=0, keepdim=True)
    x = (x - grey) * s + grey
    return (x * 2 - 1).clamp(-1, 1)


def augment_view(image, focus: tuple[float, float], generator, *, crop_scale: float, jitter: float):
    """A random resized crop (scale uniform in [crop_scale, 1], focus kept) then colour jitter of `image`
    [3, H, W] in [-1, 1]; draws 3 (+3 with jitter) uniforms whatever is on, so streams stay aligned."""
    import torch

    scale_u = torch.rand((), generator=generator).item()
    out = random_resized_crop(image, crop_scale + (1.0 - crop_scale) * scale_u, focus, generator) \
        if crop_scale < 1.0 else image
    if crop_scale >= 1.0:
        torch.rand(2, generator=generator)
    return colour_jitter(out, jitter, generator) if jitter > 0 else out


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
