"""How much of an off-centre subject survives `standardize` vs a plain centre crop.

Synthetic wide / tall images with one subject at a known place: a shape on a plain, noisy or
gradient background, and (if python_avatars + resvg_py are installed) a cartoon face pasted
off-centre on a noisy canvas. Kept fraction = subject pixels inside the crop / all subject pixels.

    .venv/bin/python benchmarks/trim_vs_centre.py [--n 60]
"""

from __future__ import annotations

import argparse
import random

import numpy as np


def centre_box(w: int, h: int) -> tuple[int, int, int, int]:
    """The largest centred square: the reference a plain centre crop keeps."""
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    return x0, y0, x0 + side, y0 + side


def kept_fraction(mask: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Fraction of True pixels of mask inside box (a box reaching outside the image is clipped)."""
    h, w = mask.shape
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    return float(mask[y0:y1, x0:x1].sum() / max(mask.sum(), 1))


def _background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "plain":
        return np.full((h, w, 3), 235, np.float32)
    if kind == "noise":
        return (rng.random((h, w, 3)) * 50 + 110).astype(np.float32)
    ramp = np.linspace(60, 200, w if w >= h else h, dtype=np.float32)
    ramp = ramp[None, :, None] if w >= h else ramp[:, None, None]
    return np.broadcast_to(ramp, (h, w, 3)).copy()


def shape_case(index: int, seed: int = 0):
    """(image, subject mask, kind) with a shape far from the centre along the long axis."""
    from PIL import Image, ImageDraw

    from ldmkit.data.builtin.shapes import COLORS, SHAPES, draw_shape

    rng_py, rng = random.Random(f"trim-{seed}-{index}"), np.random.default_rng([seed, index])
    kind = ("plain", "noise", "gradient")[index % 3]
    long_side, short_side = 240, 120
    wide = index % 2 == 0
    w, h = (long_side, short_side) if wide else (short_side, long_side)
    d = rng_py.uniform(0.3, 0.5) * short_side
    along = rng_py.choice((rng_py.uniform(d / 2 + 4, long_side * 0.3), rng_py.uniform(long_side * 0.7, long_side - d / 2 - 4)))
    across = rng_py.uniform(d / 2 + 4, short_side - d / 2 - 4)
    cx, cy = (along, across) if wide else (across, along)
    mask_img = Image.new("L", (w, h), 0)
    shape = rng_py.choice(SHAPES)
    draw_shape(ImageDraw.Draw(mask_img), shape, cx, cy, d, 255)
    mask = np.asarray(mask_img) > 127
    pixels = _background(kind, w, h, rng)
    pixels[mask] = COLORS[rng_py.choice(sorted(COLORS))]
    return Image.fromarray(pixels.astype(np.uint8)), mask, f"shape/{kind}"


def face_case(index: int, seed: int = 0):
    """(image, subject mask, kind): a cartoon avatar pasted near one end of a wide noisy canvas."""
    from PIL import Image

    from ldmkit.data.builtin.avatars import random_attributes, render_avatar

    rng_py, rng = random.Random(f"face-{seed}-{index}"), np.random.default_rng([seed, 1000 + index])
    labels = random_attributes(rng_py)
    labels["background"] = "white"
    avatar = render_avatar(labels, 160)
    w, h = 480, 200
    canvas = Image.fromarray(_background("noise", w, h, rng).astype(np.uint8))
    x = rng_py.choice((rng_py.randint(0, 60), rng_py.randint(w - 220, w - 160)))
    y = 20
    canvas.paste(avatar, (x, y))
    mask = np.zeros((h, w), bool)
    mask[y + 20:y + 110, x + 45:x + 115] = True  # the face region of the 160 px avatar
    return canvas, mask, "face/noise"


def run(n: int = 60, size: int = 64, seed: int = 0, faces: int = 10) -> dict[str, dict[str, float]]:
    """Mean kept fraction per case kind for ours and for centre crop, plus reason counts."""
    from ldmkit.data.trim import standardize

    cases = [shape_case(i, seed) for i in range(n)]
    try:
        cases += [face_case(i, seed) for i in range(faces)]
    except ImportError:
        pass
    table: dict[str, dict[str, float]] = {}
    for image, mask, kind in cases:
        _, record = standardize(image, size)
        row = table.setdefault(kind, {"n": 0, "ours": 0.0, "centre": 0.0})
        row["n"] += 1
        row["ours"] += kept_fraction(mask, record.crop_box)
        row["centre"] += kept_fraction(mask, centre_box(*image.size))
        row[f"reason:{record.reason}"] = row.get(f"reason:{record.reason}", 0) + 1
    for row in table.values():
        row["ours"] /= row["n"]
        row["centre"] /= row["n"]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--faces", type=int, default=10)
    args = parser.parse_args(argv)
    table = run(args.n, faces=args.faces)
    print(f"{'case':<16}{'n':>4}{'ours kept':>11}{'centre kept':>13}{'ratio':>8}  reasons")
    for kind, row in sorted(table.items()):
        reasons = ", ".join(f"{k[7:]} {int(v)}" for k, v in sorted(row.items()) if k.startswith("reason:"))
        print(f"{kind:<16}{int(row['n']):>4}{row['ours']:>11.3f}{row['centre']:>13.3f}{row['ours'] / max(row['centre'], 1e-9):>8.2f}  {reasons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
