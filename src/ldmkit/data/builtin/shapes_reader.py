"""Read the attributes of a `shapes` scene back from pixels (to score generated images).

Deterministic and model-free: background = nearest background colour to the border median;
foreground = pixels far from it; shapes = the largest 4-connected foreground blobs; colour = nearest
palette colour to a blob's core; shape = best soft-IoU against templates drawn by the generator's own
`draw_shape`; size / position / relation = the blob's box against the generator's grid.
Imperfect images still get a best guess; each attribute carries a confidence in [0, 1].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ldmkit.data.builtin.shapes import (
    BACKGROUNDS, COLORS, NONE, SHAPES, SIZES, SUPERSAMPLE, draw_shape,
)

WORK_SIZE = 64
"""Images larger than this are reduced first: the generator's shapes are readable at 32 px."""
FOREGROUND_DISTANCE = 45.0
"""RGB distance from the background above which a pixel is foreground (palette minimum is ~110)."""
MIN_AREA = 0.008
"""Smallest blob that counts as a shape, as a fraction of the image area (a small circle is 0.038)."""


def read_shapes(img) -> dict:
    """Best-guess labels of a shapes image: {"labels": {...}, "confidence": {...}, "overall": float}.

    `labels` has the same keys as the dataset's label columns; `confidence` holds one value in
    [0, 1] per label; `overall` is their minimum. An image with no shape reads as count "0".
    """
    rgb = _as_array(img)
    side = rgb.shape[0]
    background, bg_conf = _read_background(rgb)
    distance = np.linalg.norm(rgb - np.array(BACKGROUNDS[background], dtype=np.float32), axis=-1)
    blobs = [b for b in _components(distance > FOREGROUND_DISTANCE) if len(b[0]) >= MIN_AREA * side * side]
    blobs.sort(key=lambda b: -len(b[0]))
    area_total = float(sum(len(b[0]) for b in blobs)) or 1.0
    kept = blobs[:2]
    # confidence in the count: how much of the foreground the kept blobs explain
    count_conf = sum(len(b[0]) for b in kept) / area_total
    shapes = [_read_blob(rgb, distance, ys, xs, side) for ys, xs in kept]
    labels = {"count": str(len(shapes))}
    confidence = {"count": count_conf}
    if len(shapes) == 2:
        (a, b) = shapes
        dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
        vertical = abs(dy) >= abs(dx)
        if (vertical and dy < 0) or (not vertical and dx < 0):
            a, b = b, a
        relation = "above" if vertical else "left of"
        rel_conf = abs(abs(dy) - abs(dx)) / max(abs(dy) + abs(dx), 1e-6)
        first, second, position, pos_conf = a, b, NONE, 1.0
    elif shapes:
        first, second, relation, rel_conf = shapes[0], None, NONE, 1.0
        position, pos_conf = _position(first["cx"], first["cy"])
    else:
        first = second = None
        position, pos_conf, relation, rel_conf = NONE, 1.0, NONE, 1.0
    for suffix, item in (("", first), ("2", second)):
        for key in ("shape", "color", "size"):
            labels[key + suffix] = item[key] if item else NONE
            confidence[key + suffix] = item[key + "_conf"] if item else 1.0
    labels.update(position=position, relation=relation, background=background)
    confidence.update(position=pos_conf, relation=rel_conf, background=bg_conf)
    order = ("count", "shape", "color", "size", "position", "shape2", "color2", "size2", "relation", "background")
    labels = {k: labels[k] for k in order}
    confidence = {k: float(np.clip(confidence[k], 0.0, 1.0)) for k in order}
    return {"labels": labels, "confidence": confidence, "overall": min(confidence.values())}


def attribute_accuracy(read: dict[str, str], truth: dict[str, str]) -> float:
    """Fraction of the true label columns that `read` got right (the shapes score of an image)."""
    return sum(read.get(k) == v for k, v in truth.items()) / max(len(truth), 1)


def _as_array(img) -> np.ndarray:
    """RGB float32 array of a square-ish image, reduced to at most WORK_SIZE px."""
    from PIL import Image

    img = img.convert("RGB")
    if max(img.size) > WORK_SIZE:
        img = img.resize((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float32)


def _nearest(color: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    """Nearest palette entry and a confidence 1 - d_nearest / d_second."""
    names = sorted(palette)
    dist = np.array([np.linalg.norm(color - np.array(palette[k], dtype=np.float32)) for k in names])
    order = np.argsort(dist)
    return names[order[0]], float(1.0 - dist[order[0]] / max(dist[order[1]], 1e-6))


def _read_background(rgb: np.ndarray) -> tuple[str, float]:
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return _nearest(np.median(border, axis=0), BACKGROUNDS)


def _components(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components of a boolean mask as (ys, xs) index arrays (flood fill, small images)."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    found = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, ys, xs = [(y0, x0)], [], []
        while stack:
            y, x = stack.pop()
            ys.append(y)
            xs.append(x)
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        found.append((np.array(ys), np.array(xs)))
    return found


def _read_blob(rgb: np.ndarray, distance: np.ndarray, ys: np.ndarray, xs: np.ndarray, side: int) -> dict:
    """Colour, shape, size and centre of one blob, with confidences."""
    d = distance[ys, xs]
    core = d >= np.quantile(d, 0.5)  # the half of the blob farthest from the background: no edge blending
    color, color_conf = _nearest(np.median(rgb[ys[core], xs[core]], axis=0), COLORS)
    own = np.zeros_like(distance)  # soft mask: fraction of the way from background to the blob colour
    own[ys, xs] = np.clip(d / max(float(np.median(d[core])), 1e-6), 0.0, 1.0)
    shape, shape_conf, box = _match_shape(own)
    boundary = sum(SIZES.values()) / 2
    extent = box / side
    size = "small" if extent < boundary else "large"
    size_conf = min(abs(extent - boundary) / (SIZES["large"] - boundary), 1.0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return {"shape": shape, "shape_conf": shape_conf, "color": color, "color_conf": color_conf,
            "size": size, "size_conf": size_conf, "cx": (x0 + x1) / 2 / side, "cy": (y0 + y1) / 2 / side}


def _match_shape(own: np.ndarray) -> tuple[str, float, float]:
    """Best shape by soft IoU against the generator's own rendering of each candidate, in place.

    Each candidate is fitted in closed form: its box side from the blob's soft area (area = fill
    ratio * side^2) and its box centre from the blob's centroid minus the shape's centroid offset.
    Returns (shape, confidence = best IoU scaled by its margin over the runner-up, fitted box side px).
    """
    side = own.shape[0]
    area = float(own.sum())
    yy, xx = np.mgrid[0:side, 0:side] + 0.5
    my, mx = float((own * yy).sum() / area), float((own * xx).sum() / area)
    scores, boxes = {}, {}
    for name, (fill, offset_y) in _shape_geometry().items():
        d = (area / fill) ** 0.5
        candidate = _render_mask(name, mx, my - offset_y * d, d, side)
        scores[name] = float(np.minimum(own, candidate).sum() / max(np.maximum(own, candidate).sum(), 1e-6))
        boxes[name] = d
    ranked = sorted(scores, key=scores.get, reverse=True)
    best, second = scores[ranked[0]], scores[ranked[1]]
    return ranked[0], best * min((best - second) / 0.15, 1.0), boxes[ranked[0]]


def _render_mask(name: str, cx: float, cy: float, d: float, side: int) -> np.ndarray:
    """One shape drawn exactly as the generator draws it (supersampled, box-filtered), values in [0, 1]."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (side * SUPERSAMPLE, side * SUPERSAMPLE), 0)
    draw_shape(ImageDraw.Draw(big), name, cx * SUPERSAMPLE, cy * SUPERSAMPLE, d * SUPERSAMPLE, 255)
    return np.asarray(big.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255


@lru_cache(maxsize=1)
def _shape_geometry() -> dict[str, tuple[float, float]]:
    """Per shape: fill ratio of its box and centroid's vertical offset from the box centre (/ side)."""
    s = 256
    out = {}
    for name in SHAPES:
        m = _render_mask(name, s / 2, s / 2, s, s)
        yy = np.mgrid[0:s, 0:s][0] + 0.5
        out[name] = (float(m.sum()) / s**2, float((m * yy).sum() / m.sum()) / s - 0.5)
    return out


def _position(cx: float, cy: float) -> tuple[str, float]:
    """Grid cell of a centre (thirds at 0.375 / 0.625) and the distance to the nearest cell edge."""
    def axis(v: float, low: str, high: str) -> tuple[str, float]:
        name = low if v < 0.375 else high if v > 0.625 else ""
        return name, min(abs(v - 0.375), abs(v - 0.625)) / 0.125

    vertical, cy_conf = axis(cy, "top", "bottom")
    horizontal, cx_conf = axis(cx, "left", "right")
    name = " ".join(p for p in (vertical, horizontal) if p) or "centre"
    return name, min(cx_conf, cy_conf, 1.0)
