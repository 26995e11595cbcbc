"""Standardize an image to a fixed size: trim uniform borders, crop around what matters, resize well.

    img, record = standardize(Image.open(p), 64)                  # crop, focus chosen automatically
    img, record = standardize(Image.open(p), (96, 64), policy="pad")

1. Border trim: the border colour is the median of the outermost pixels; if (nearly) the whole border
   is within `tolerance` of it, rows/columns holding no pixel farther than that are cut.
2. Aspect: `crop` takes the largest window of the target aspect inside the trimmed box, placed
   around a focal point -- the largest frontal face (OpenCV Haar cascade, if cv2 is installed), else
   the position that keeps the most saliency (edge energy + distance from the border colour), else
   the centre. `pad` keeps everything and extends the short side with the border colour (or white).
3. Resize with Pillow LANCZOS and `reducing_gap` (antialiased, fast for large reductions).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ldmkit.errors import UsageError

POLICIES = ("crop", "pad")
FOCI = ("auto", "face", "saliency", "centre")
REASONS = ("face", "saliency", "centre", "pad")
SALIENCY_SIDE = 128
"""Saliency and face search run on a copy whose longer side is at most this (faces: 4x this)."""
UNIFORM_BORDER = 0.9
"""Fraction of border pixels that must match the border colour for the border to count as uniform."""

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TrimRecord:
    """How `standardize` turned the original image into the result (boxes are left, top, right, bottom)."""

    original_size: tuple[int, int]
    """(width, height) of the input image."""
    trim_box: Box
    """The content left after cutting uniform borders, in original pixels (the full image if none)."""
    crop_box: Box
    """The region scaled to the output, in original pixels; with policy 'pad' it reaches outside the image."""
    focus: tuple[float, float]
    """The focal point (x, y) the crop was placed around, in original pixels."""
    reason: str
    """Why the crop sits where it does: 'face', 'saliency', 'centre' or 'pad'."""
    background: tuple[int, int, int] | None
    """The uniform border colour that was trimmed, or None when the border was not uniform."""

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"reason {self.reason!r} not in {REASONS}")
        w, h = self.original_size
        left, top, right, bottom = self.trim_box
        if not (0 <= left < right <= w and 0 <= top < bottom <= h):
            raise ValueError(f"trim box {self.trim_box} not inside a {w}x{h} image")
        if self.crop_box[0] >= self.crop_box[2] or self.crop_box[1] >= self.crop_box[3]:
            raise ValueError(f"empty crop box {self.crop_box}")


def standardize(img, size: int | tuple[int, int], *, policy: str = "crop", focus: str = "auto",
                tolerance: float = 24.0):
    """Trim borders, crop or pad to the aspect of `size`, resize; returns (PIL RGB image, TrimRecord).

    size: side of a square output or (width, height). tolerance: RGB distance below which a pixel
    matches the border colour.
    """
    from PIL import Image

    width, height = (size, size) if isinstance(size, int) else tuple(size)
    if policy not in POLICIES:
        raise UsageError(f"policy must be one of {POLICIES}, got {policy!r}")
    if focus not in FOCI:
        raise UsageError(f"focus must be one of {FOCI}, got {focus!r}")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise UsageError(f"size must be a positive int or (width, height) of positive ints, got {size!r}")
    rgb = to_rgb(img)
    pixels = np.asarray(rgb, dtype=np.float32)
    trim_box, background = trim_border(pixels, tolerance)
    aspect = width / height
    if policy == "pad":
        crop_box = pad_box(trim_box, aspect)
        point, reason = ((crop_box[0] + crop_box[2]) / 2, (crop_box[1] + crop_box[3]) / 2), "pad"
    else:
        crop_box, point, reason = crop_window(rgb, pixels, trim_box, aspect, focus, background)
    fill = background if background is not None else (255, 255, 255)
    region = cut(rgb, crop_box, fill)
    out = region.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    record = TrimRecord(rgb.size, trim_box, crop_box, (float(point[0]), float(point[1])), reason,
                        None if background is None else tuple(int(c) for c in background))
    return out, record


def to_rgb(img):
    """RGB copy of any PIL image; transparency is composited on white."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def trim_border(pixels: np.ndarray, tolerance: float) -> tuple[Box, tuple[int, int, int] | None]:
    """Box of the content inside a uniform border, and the border colour (None: border not uniform)."""
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colour = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - colour, axis=1) <= tolerance) < UNIFORM_BORDER:
        return (0, 0, w, h), None
    content = np.linalg.norm(pixels - colour, axis=2) > tolerance
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    background = tuple(int(round(c)) for c in colour)
    if rows.size == 0:
        return (0, 0, w, h), background  # a blank image: nothing to trim towards
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), background


def pad_box(box: Box, aspect: float) -> Box:
    """The smallest box of the given aspect (w / h) centred on `box` and containing it."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    if w / h < aspect:
        new_w = round(h * aspect)
        left -= (new_w - w) // 2
        return left, top, left + new_w, bottom
    new_h = round(w / aspect)
    top -= (new_h - h) // 2
    return left, top, right, top + new_h


def crop_window(rgb, pixels: np.ndarray, box: Box, aspect: float, focus: str, background):
    """Largest window of `aspect` inside `box`, placed by face / saliency / centre: (box, point, reason)."""
    left, top, right, bottom = box
    w, h = right - left, bottom - top
    win_w, win_h = (w, max(1, min(h, round(w / aspect)))) if w / h <= aspect else (max(1, min(w, round(h * aspect))), h)
    centre = (left + w / 2, top + h / 2)
    if (win_w, win_h) == (w, h):
        return box, centre, "centre"  # the content already has the right aspect: nothing to choose
    point, reason = centre, "centre"
    if focus in ("auto", "face"):
        face = largest_face(rgb.crop(box))
        if face is not None:
            point, reason = (left + face[0], top + face[1]), "face"
    if reason == "centre" and focus in ("auto", "saliency"):
        found = saliency_window(pixels[top:bottom, left:right], win_w, win_h, background)
        if found is not None:
            point, reason = (left + found[0], top + found[1]), "saliency"
    x0 = int(round(min(max(point[0] - win_w / 2, left), right - win_w)))
    y0 = int(round(min(max(point[1] - win_h / 2, top), bottom - win_h)))
    return (x0, y0, x0 + win_w, y0 + win_h), point, reason


def saliency_map(pixels: np.ndarray, background) -> np.ndarray:
    """Edge energy plus distance from the border colour (or from the mean colour), each scaled to [0, 1]."""
    gray = pixels.mean(axis=2)
    gy, gx = np.gradient(gray)
    edges = np.hypot(gx, gy)
    reference = np.asarray(background if background is not None else pixels.reshape(-1, 3).mean(axis=0), dtype=np.float32)
    distinct = np.linalg.norm(pixels - reference, axis=2)
    parts = [m / m.max() for m in (edges, distinct) if m.max() > 0]
    return sum(parts) if parts else np.zeros_like(gray)


def saliency_window(pixels: np.ndarray, win_w: int, win_h: int, background) -> tuple[float, float] | None:
    """Centre of the window (sliding along the long axis) that holds the most saliency; None if flat."""
    from PIL import Image

    h, w, _ = pixels.shape
    scale = min(1.0, SALIENCY_SIDE / max(h, w))
    if scale < 1.0:
        small = Image.fromarray(pixels.astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
        pixels = np.asarray(small, dtype=np.float32)
    sal = saliency_map(pixels, background)
    if sal.max() <= 0:
        return None
    horizontal = win_w < w
    profile = sal.sum(axis=0 if horizontal else 1)
    span = max(1, min(len(profile), round((win_w if horizontal else win_h) * scale)))
    sums = np.convolve(profile, np.ones(span), mode="valid")
    best = sums.max()
    if best - sums.min() <= 1e-6 * max(best, 1e-12):
        return None  # every placement keeps the same saliency: no reason to move off centre
    candidates = np.flatnonzero(sums >= best - 1e-9 * best)
    middle = (len(sums) - 1) / 2
    start = candidates[np.argmin(np.abs(candidates - middle))]  # ties: the placement nearest the centre
    along = (start + span / 2) / scale
    return (along, h / 2) if horizontal else (w / 2, along)


def largest_face(img) -> tuple[float, float] | None:
    """Centre (x, y) of the largest frontal face found by OpenCV's Haar cascade; None if none or no cv2."""
    cascade = _face_cascade()
    if cascade is None:
        return None
    import cv2

    scale = min(1.0, 4 * SALIENCY_SIDE / max(img.size))
    small = img if scale == 1.0 else img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    gray = cv2.cvtColor(np.asarray(small.convert("RGB")), cv2.COLOR_RGB2GRAY)
    min_side = max(16, int(0.1 * min(gray.shape)))
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return (x + w / 2) / scale, (y + h / 2) / scale


_THREAD = threading.local()


def _face_cascade():
    """This thread's frontal-face Haar cascade (opencv-python(-headless) 4.x), or None if unavailable.

    One per thread: a CascadeClassifier shared by the cache builder's loader threads fails inside
    OpenCV (cascadedetect.hpp `0 <= scaleIdx` assertion), seen on a 2-thread cache build."""
    if not hasattr(_THREAD, "cascade"):
        _THREAD.cascade = _load_face_cascade()
    return _THREAD.cascade


def _forget_face_cascade() -> None:
    """Drop this thread's cascade (the next call loads it again)."""
    _THREAD.__dict__.pop("cascade", None)


def _load_face_cascade():
    try:
        import cv2
    except ImportError:
        return None
    data = getattr(cv2, "data", None)
    # OpenCV 5 dropped the Haar cascades (and some builds lack CascadeClassifier): fall back to saliency
    if data is None or not hasattr(cv2, "CascadeClassifier") or not hasattr(data, "haarcascades"):
        return None
    cascade = cv2.CascadeClassifier(data.haarcascades + "haarcascade_frontalface_default.xml")
    return None if cascade.empty() else cascade


def cut(img, box: Box, fill):
    """img.crop(box), with parts outside the image filled with `fill` (not Pillow's black)."""
    from PIL import Image

    left, top, right, bottom = box
    if left >= 0 and top >= 0 and right <= img.width and bottom <= img.height:
        return img.crop(box)
    canvas = Image.new("RGB", (right - left, bottom - top), tuple(int(c) for c in fill))
    canvas.paste(img, (-left, -top))
    return canvas
