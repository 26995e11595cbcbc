"""Where a crop should go when the subject is too big for it: saliency on a small blurred copy.

Used by `ldmkit.data.trim.crop_window`; see its module docstring and benchmarks/trim_vs_centre.py.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]

MARGIN = 0.05
"""Margin kept around a trimmed subject, as a fraction of its larger side, on each side (when it fits)."""
SALIENCY_GAIN = 1.05
"""Saliency must keep this many times the centre window's salient mass to move the window off centre."""
BLUR_RADIUS = 1.5
"""Gaussian blur (pixels of the <= SALIENCY_SIDE copy) that removes texture before measuring distinctness."""
SALIENCY_SIDE = 128
"""Saliency and face search run on a copy whose longer side is at most this (faces: 4x this)."""
UNIFORM_BORDER = 0.9
"""Fraction of border pixels that must match the border colour for the border to count as uniform."""


def saliency_map(pixels: np.ndarray, background) -> np.ndarray:
    """How far each (blurred) pixel's colour is from the backdrop's, beyond what the border itself varies.

    The backdrop colour is the uniform border colour, else the median border colour; 1.6x the border's
    median distance from it (~ its 90th percentile for texture, yet robust to a subject covering up to
    ~40% of the border) is subtracted, so texture the border shares scores ~0 and a subject of another
    colour stands out. Edge energy of the blurred image, less 1.6x the border's median, is added
    (each part scaled to [0, 1])."""
    from PIL import Image, ImageFilter

    blurred = np.asarray(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(BLUR_RADIUS)), dtype=np.float32)
    border = np.concatenate([blurred[0], blurred[-1], blurred[:, 0], blurred[:, -1]])
    reference = np.asarray(background, np.float32) if background is not None else np.median(border, axis=0)
    distance = np.linalg.norm(blurred - reference, axis=2)
    distinct = np.maximum(distance - 1.6 * np.median(np.linalg.norm(border - reference, axis=1)), 0.0)
    gy, gx = np.gradient(blurred.mean(axis=2))
    edges = np.hypot(gx, gy)  # the outline of a subject on a smooth gradient, which colour distance misses
    edge_border = np.concatenate([edges[0], edges[-1], edges[:, 0], edges[:, -1]])
    edges = np.maximum(edges - 1.6 * np.median(edge_border), 0.0)
    parts = [m / m.max() for m in (distinct, edges) if m.max() > 0]
    return sum(parts) if parts else np.zeros_like(distance)


def side_colour(pixels: np.ndarray, tolerance: float) -> tuple[int, int, int] | None:
    """The colour of the top, left and right borders when they are uniform (a backdrop that a subject
    reaching the bottom edge interrupts), else None."""
    sides = np.concatenate([pixels[0], pixels[:, 0], pixels[:, -1]])
    colour = np.median(sides, axis=0)
    if np.mean(np.linalg.norm(sides - colour, axis=1) <= tolerance) < UNIFORM_BORDER:
        return None
    return tuple(int(round(c)) for c in colour)


def saliency_window(pixels: np.ndarray, box: Box, win_w: int, win_h: int, background, *,
                    free: bool = True, bottom_rule: bool = True,
                    gain: float = SALIENCY_GAIN) -> tuple[float, float] | None:
    """Centre (x, y) of the win_w x win_h window, sliding along the image's long axis over `box`, that keeps
    the most salient mass; None when that is not clearly more (`gain` times) than the centred window's.
    With bottom_rule, a subject cut by the bottom edge keeps its top instead; with free=False that is the
    only move made."""
    from PIL import Image

    h, w, _ = pixels.shape
    scale = min(1.0, SALIENCY_SIDE / max(h, w))
    if scale < 1.0:
        small = Image.fromarray(pixels.astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
        pixels = np.asarray(small, dtype=np.float32)
    sal = saliency_map(pixels, background)
    horizontal = win_w < w
    profile = sal.sum(axis=0 if horizontal else 1)
    if profile.sum() <= 0:
        return None
    lo, hi = (box[0], box[2]) if horizontal else (box[1], box[3])
    length = len(profile)
    span = max(1, min(length, round((win_w if horizontal else win_h) * scale)))
    sums = np.convolve(profile, np.ones(span), mode="valid")  # sums[i]: window starting at i
    centred = min(len(sums) - 1, max(0, round(((lo + hi) / 2) * scale - span / 2)))
    if not horizontal and bottom_rule:
        top = cut_by_bottom_edge(sal)
        if top is not None:  # a bust / standing figure: keep its top, not the most of its body
            start = min(len(sums) - 1, max(0, round(top - 0.5 * MARGIN * span)))
            return w / 2, (start + span / 2) / scale
    if not free:
        return None
    best = int(np.argmax(sums))
    if sums[best] < gain * sums[centred] + 1e-9:
        return None
    candidates = np.flatnonzero(sums >= sums[best] * (1 - 1e-6))
    start = candidates[np.argmin(np.abs(candidates - centred))]  # ties: the placement nearest the centre
    along = (start + span / 2) / scale
    return (along, h / 2) if horizontal else (w / 2, along)


def cut_by_bottom_edge(sal: np.ndarray) -> float | None:
    """Row where a salient subject begins that the bottom edge cuts wide (>= 10% of the width, and over
    twice as wide as the top edge cuts it: a head at the top edge is narrow, shoulders are not); else None."""
    rows = (sal > 0.2 * sal.max()).mean(axis=1)
    band = max(1, len(rows) // 32)
    bottom, top = rows[-band:].mean(), rows[:band].mean()
    if bottom < 0.1 or bottom < 2 * top:
        return None
    empty = np.flatnonzero(rows < 0.03)
    start = int(empty[-1]) + 1 if empty.size else 0  # the subject: unbroken rows up from the bottom edge
    return float(start) if start < len(rows) - band and rows[start:].min() >= 0.03 else None
