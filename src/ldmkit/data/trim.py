"""Standardize an image to a fixed size: trim uniform borders, crop around what matters, resize well.

    img, record = standardize(Image.open(p), 64)                  # crop, focus chosen automatically
    img, record = standardize(Image.open(p), (96, 64), policy="pad")
    img, record = standardize(Image.open(p), 64, trim=False, focus="centre")   # a plain centre crop
    img, record = standardize(Image.open(p), 64, policy="fill")   # the subject fills the frame

1. Border trim (`trim=True`): the border colour is the median of the outermost pixels; if (nearly)
   the whole border is within `tolerance` of it, rows/columns holding no pixel farther than that are
   the subject's box.
2. Aspect: `crop` first tries the smallest window of the target aspect that holds the whole subject
   box plus a small margin, inside the image (reason 'content': nothing of the subject is lost, and a
   small subject on a plain backdrop is zoomed in). When the subject is too big for that, the window
   is the largest one inside the image (the size a centre crop has) and slides along the long axis:
   just far enough from the centre to hold the largest confident frontal face (OpenCV Haar cascade, if
   cv2 is installed); else to the place that keeps the most salient pixels (trim_saliency.py: blurred
   colour far from the backdrop's; on a plain backdrop a subject cut by the bottom edge -- a person, a
   bust -- keeps its top); else the centre. Saliency moves the window only when that keeps clearly
   more (`SALIENCY_GAIN`), and on a textured backdrop only for wide images (`PHOTO_KEEPS`), so it does
   not do worse than a centre crop on a subject it cannot see. `pad` keeps everything and extends the
   short side with the border colour (or white). `fill` takes the largest window of the target aspect
   inside the subject box, so the subject fills the frame and its long side is cut (placed by face, then
   saliency, then the centre, inside the box): this was `crop` before trim version 2, and the shipped
   default model was trained on it, so continuing that model's training needs `fill` (docs/quality.md).
3. Resize with Pillow LANCZOS and `reducing_gap` (antialiased, fast for large reductions).

Measured against a centre crop in `benchmarks/trim_vs_centre.py` (docs/benchmarks.md).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ldmkit.data.trim_saliency import (  # noqa: F401  (re-exported: part of trim's vocabulary)
    MARGIN,
    SALIENCY_SIDE,
    UNIFORM_BORDER,
    Box,
    saliency_map,
    saliency_window,
    side_colour,
)
from ldmkit.errors import UsageError

POLICIES = ("crop", "pad", "fill")
FOCI = ("auto", "face", "saliency", "centre")
REASONS = ("content", "face", "saliency", "centre", "pad")
TRIM_VERSION = 2
"""Bumped whenever the algorithm changes what it returns (latent caches keyed on it are rebuilt)."""
PHOTO_KEEPS = 0.7
"""On a non-uniform backdrop, saliency moves a window only when it keeps less than this fraction of the
image's long side: a centre crop of a 4:3 photo keeps 75% (both thirds lines), and there texture fooled
saliency more often than it helped (benchmarks/trim_vs_centre.py). Faces and a subject cut by the bottom
edge on a plain backdrop still move it."""
FACE_NEIGHBOURS = 8
"""Haar-cascade minNeighbors: 5 (OpenCV's usual) found 'faces' in textured photo backdrops."""
FACE_MIN_WEIGHT = 2.0
"""Least confidence (the cascade's last-stage level weight) of a face that moves a crop: the false alarm
on a textured backdrop in benchmarks/trim_vs_centre.py scored 1.5, the avatar faces found 2.3-2.4."""
TOLERANCE = 24.0
"""Default RGB distance below which a pixel matches the border colour."""


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
    """Why the crop sits where it does: 'content' (the whole trimmed subject fits), 'face', 'saliency',
    'centre' or 'pad'."""
    background: tuple[int, int, int] | None
    """The uniform border colour (trimmed when trim is on; the pad colour), or None when not uniform."""

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
                trim: bool = True, tolerance: float = TOLERANCE):
    """Trim borders, crop or pad to the aspect of `size`, resize; returns (PIL RGB image, TrimRecord).

    size: side of a square output or (width, height). policy: 'crop' or 'pad'. focus: where a crop
    that cannot hold the whole subject goes ('auto', 'face', 'saliency', 'centre'; only with 'crop').
    trim: cut uniform borders first. tolerance: RGB distance below which a pixel matches the border colour.
    """
    from PIL import Image

    width, height = (size, size) if isinstance(size, int) else tuple(size)
    check_policy(policy, focus, trim)
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise UsageError(f"size must be a positive int or (width, height) of positive ints, got {size!r}")
    rgb = to_rgb(img)
    pixels = np.asarray(rgb, dtype=np.float32)
    trim_box, background = trim_border(pixels, tolerance)
    if not trim:
        trim_box = (0, 0, rgb.width, rgb.height)
    aspect = width / height
    if policy == "pad":
        crop_box = pad_box(trim_box, aspect)
        point, reason = ((crop_box[0] + crop_box[2]) / 2, (crop_box[1] + crop_box[3]) / 2), "pad"
    elif policy == "fill":
        crop_box, point, reason = fill_window(rgb, pixels, trim_box, aspect, focus, background)
    else:
        crop_box, point, reason = crop_window(rgb, pixels, trim_box, aspect, focus, background)
    fill = background if background is not None else (255, 255, 255)
    region = cut(rgb, crop_box, fill)
    out = region.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    record = TrimRecord(rgb.size, trim_box, crop_box, (float(point[0]), float(point[1])), reason,
                        None if background is None else tuple(int(c) for c in background))
    return out, record


def check_policy(policy: str, focus: str, trim: bool) -> None:
    """UsageError for an unknown policy or focus, or a focus given with 'pad' (where it has no effect)."""
    if policy not in POLICIES:
        raise UsageError(f"policy must be one of {POLICIES}, got {policy!r}")
    if focus not in FOCI:
        raise UsageError(f"focus must be one of {FOCI}, got {focus!r}")
    if not isinstance(trim, bool):
        raise UsageError(f"trim must be true or false, got {trim!r}")
    if policy == "pad" and focus != "auto":
        raise UsageError(f"focus {focus!r} has no effect with fit (policy) 'pad': padding keeps the whole image")


class Standardizer:
    """`standardize` with a fixed policy, as the (img, size) -> (img, record) preprocess of caches and
    trainers; `cache_id` names the policy and algorithm version (a cache built with another is rebuilt)."""

    def __init__(self, policy: str = "crop", focus: str = "auto", trim: bool = True) -> None:
        check_policy(policy, focus, trim)
        self.policy, self.focus, self.trim = policy, focus, trim

    @property
    def cache_id(self) -> str:
        return f"ldmkit.data.trim.standardize-v{TRIM_VERSION}(policy={self.policy},focus={self.focus},trim={self.trim})"

    def __call__(self, img, size: int | tuple[int, int]):
        return standardize(img, size, policy=self.policy, focus=self.focus, trim=self.trim)

    def __repr__(self) -> str:
        return f"Standardizer(policy={self.policy!r}, focus={self.focus!r}, trim={self.trim})"


def focus_fraction(record: TrimRecord) -> tuple[float, float]:
    """The focal point as a fraction (x, y) of the standardized output (inside [0, 1])."""
    left, top, right, bottom = record.crop_box
    fx = (record.focus[0] - left) / (right - left)
    fy = (record.focus[1] - top) / (bottom - top)
    return min(max(fx, 0.0), 1.0), min(max(fy, 0.0), 1.0)


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
    distance = np.linalg.norm(pixels - colour, axis=2)
    # a content pixel differs from the border colour and so does its 3x3 neighbourhood on average: sensor
    # noise and JPEG speckle on a photographed backdrop are single pixels, and must not widen the box
    content = (distance > tolerance) & (mean3x3(distance) > tolerance)
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    background = tuple(int(round(c)) for c in colour)
    if rows.size == 0:
        return (0, 0, w, h), background  # a blank image: nothing to trim towards
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1), background


def mean3x3(values: np.ndarray) -> np.ndarray:
    """The mean over each pixel's 3x3 neighbourhood (edges replicated)."""
    padded = np.pad(values, 1, mode="edge")
    h, w = values.shape
    return sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


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
    """The crop of `aspect`: the whole subject box when it fits in the image, else the largest window in
    the image placed by face / saliency / centre. Returns (box, focal point, reason)."""
    img_w, img_h = rgb.size
    left, top, right, bottom = box
    max_w, max_h = fit_window(img_w, img_h, aspect)
    need_w, need_h = fit_around(right - left, bottom - top, aspect)
    centre = (left + (right - left) / 2, top + (bottom - top) / 2)
    if need_w <= max_w and need_h <= max_h:
        # the whole subject fits: the smallest window holding it (+ margin where the image has room)
        pad = MARGIN * max(right - left, bottom - top)
        win_w, win_h = fit_around(right - left + 2 * pad, bottom - top + 2 * pad, aspect)
        win_w, win_h = (win_w, win_h) if win_w <= max_w and win_h <= max_h else (max_w, max_h)
        return place(centre, win_w, win_h, (0, 0, img_w, img_h)), centre, "content"
    point, reason = centre, "centre"
    if focus in ("auto", "face"):
        face = largest_face(rgb.crop(box))
        if face is not None:  # the window moves from the centre only as far as it must to hold the face
            x0, y0, x1, y1 = face[0] + left, face[1] + top, face[2] + left, face[3] + top
            point, reason = ((x0 + x1) / 2, (y0 + y1) / 2), "face"
            return nearest_holding(centre, (x0, y0, x1, y1), max_w, max_h, (0, 0, img_w, img_h)), point, reason
    if reason == "centre" and focus in ("auto", "saliency"):
        # a plain backdrop that a subject cuts at the bottom edge is still plain on the other three sides
        backdrop = background if background is not None else side_colour(pixels, TOLERANCE)
        # on a textured backdrop of a photo-like aspect the centre is kept (see PHOTO_KEEPS)
        free = backdrop is not None or min(max_w / img_w, max_h / img_h) < PHOTO_KEEPS
        found = saliency_window(pixels, box, max_w, max_h, backdrop, free=free, bottom_rule=backdrop is not None)
        if found is not None:
            point, reason = found, "saliency"
    return place(point, max_w, max_h, (0, 0, img_w, img_h)), point, reason


def fill_window(rgb, pixels: np.ndarray, box: Box, aspect: float, focus: str, background):
    """The largest window of `aspect` inside the subject box `box`, placed inside it by face / saliency /
    centre: (box, focal point, reason). The subject fills the frame; its long side is cut."""
    left, top, right, bottom = box
    win_w, win_h = fit_window(right - left, bottom - top, aspect)
    centre = (left + (right - left) / 2, top + (bottom - top) / 2)
    if (win_w, win_h) == (right - left, bottom - top):
        return box, centre, "centre"  # the subject already has the aspect: nothing to place
    if focus in ("auto", "face"):
        face = largest_face(rgb.crop(box))
        if face is not None:
            point = (left + (face[0] + face[2]) / 2, top + (face[1] + face[3]) / 2)
            return place(point, win_w, win_h, box), point, "face"
    if focus in ("auto", "saliency"):
        inside = pixels[top:bottom, left:right]
        # any gain moves it (the subject is cut anyway: keep its most salient part), as trim version 1 did
        found = saliency_window(inside, (0, 0, right - left, bottom - top), win_w, win_h, background,
                                bottom_rule=False, gain=1.0 + 1e-6)
        if found is not None:
            point = (left + found[0], top + found[1])
            return place(point, win_w, win_h, box), point, "saliency"
    return place(centre, win_w, win_h, box), centre, "centre"


def fit_window(w: int, h: int, aspect: float) -> tuple[int, int]:
    """The largest (width, height) of `aspect` (w / h) inside a w x h area."""
    if w / h <= aspect:
        return w, max(1, min(h, round(w / aspect)))
    return max(1, min(w, round(h * aspect))), h


def fit_around(w: float, h: float, aspect: float) -> tuple[int, int]:
    """The smallest (width, height) of `aspect` that holds a w x h area."""
    if w / h <= aspect:
        return max(1, int(np.ceil(h * aspect - 1e-6))), max(1, int(np.ceil(h - 1e-6)))
    return max(1, int(np.ceil(w - 1e-6))), max(1, int(np.ceil(w / aspect - 1e-6)))


def place(point, win_w: int, win_h: int, bounds: Box) -> Box:
    """A win_w x win_h box centred on `point`, shifted to lie inside `bounds`."""
    x0 = int(round(min(max(point[0] - win_w / 2, bounds[0]), bounds[2] - win_w)))
    y0 = int(round(min(max(point[1] - win_h / 2, bounds[1]), bounds[3] - win_h)))
    return x0, y0, x0 + win_w, y0 + win_h


def nearest_holding(centre, hold, win_w: int, win_h: int, bounds: Box) -> Box:
    """The win_w x win_h box inside `bounds` nearest to one centred on `centre` that holds the box `hold`
    (as much of it as fits); a detector's false alarm then costs little when the centre already holds it."""
    def start(c: float, lo: float, hi: float, win: int, b0: int, b1: int) -> int:
        first, last = hi - win, lo  # starts that hold [lo, hi] when it fits
        if first > last:
            first = last = (lo + hi) / 2 - win / 2
        return int(round(min(max(min(max(c - win / 2, first), last), b0), b1 - win)))

    x0 = start(centre[0], hold[0], hold[2], win_w, bounds[0], bounds[2])
    y0 = start(centre[1], hold[1], hold[3], win_h, bounds[1], bounds[3])
    return x0, y0, x0 + win_w, y0 + win_h


def largest_face(img) -> tuple[float, float, float, float] | None:
    """Box (left, top, right, bottom) of the largest frontal face found by OpenCV's Haar cascade, with
    a margin of half its size above (hair) and a quarter to the sides and below; None if none or no cv2."""
    cascade = _face_cascade()
    if cascade is None:
        return None
    import cv2

    scale = min(1.0, 4 * SALIENCY_SIDE / max(img.size))
    small = img if scale == 1.0 else img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    gray = cv2.cvtColor(np.asarray(small.convert("RGB")), cv2.COLOR_RGB2GRAY)
    min_side = max(16, int(0.1 * min(gray.shape)))
    found, _levels, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=FACE_NEIGHBOURS,
                                                        minSize=(min_side, min_side), outputRejectLevels=True)
    faces = [f for f, weight in zip(found, np.ravel(weights)) if weight >= FACE_MIN_WEIGHT]
    if not faces:
        return None
    x, y, w, h = (float(v) / scale for v in max(faces, key=lambda f: f[2] * f[3]))
    return x - w / 4, y - h / 2, x + w * 1.25, y + h * 1.25


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
