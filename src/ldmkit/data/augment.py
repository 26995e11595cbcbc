"""Training augmentation: caption-aware mirroring, random resized crops that keep the focal point, colour jitter.

    mirror_caption("a dog on the left")               # 'a dog on the right'
    may_mirror(sample.captions, sample.labels)        # False for text in the image, or east/west
    x = augment_view(x, focus, generator, crop_scale=0.8, jitter=0.1)   # x: [3, H, W] in [-1, 1]

A mirrored image trains with its mirrored captions ('left' <-> 'right', clockwise <-> counterclockwise),
so flipping never makes a caption false. The trainers apply these (recipe section `augment`, docs/training.md):
the VAE trainer every step; the UNet trainer, which trains on cached latents, through the cache's views
and mirrored encodings (ldmkit.data.cache). All randomness comes from the torch.Generator passed in.
"""

from __future__ import annotations

import re

TEXT_LABEL_KEYS = ("has_text", "contains_text", "text_in_image", "ocr")
"""Label keys that, when set to a true value, mark an image holding text."""
FALSE_VALUES = frozenset({"", "0", "false", "no", "none", "null"})
MIRROR_WORDS = re.compile(r"\b(left|right)(most|ward|wards|hand|handed)?\b|\b(counter-?clockwise|anti-?clockwise|clockwise)\b",
                          re.I)
"""Words a mirror turns into their opposite: left/right (+ -most, -ward(s), -hand(ed)) and the turning sense."""
UNMIRRORABLE = re.compile(r"\b(?:east|west)(?:ward|wards)?\b", re.I)
"""Directions a mirror contradicts that have no safe swap (a map's east stays east): such images never flip."""


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


def random_crops(pixels, crop: int, generator, flip_p: float = 0.5):
    """A crop x crop window at a random position of each image of `pixels` [N, C, H, W], mirrored with
    probability flip_p; three uniforms drawn per image. Returns [N, C, crop, crop]."""
    import torch

    n, _, h, w = pixels.shape
    u = torch.rand(n, 3, generator=generator)  # (N, 3): top, left, flip
    out = []
    for img, (ty, tx, flip) in zip(pixels, u.tolist()):
        top, left = int(ty * (h - crop + 1)), int(tx * (w - crop + 1))
        patch = img[:, top:top + crop, left:left + crop]  # (C, crop, crop)
        out.append(torch.flip(patch, dims=(-1,)) if flip < flip_p else patch)
    return torch.stack(out)  # (N, C, crop, crop)
