"""How much of an off-centre subject survives `standardize` vs a plain centre crop.

Synthetic wide / tall images with one subject at a known place: a shape on a plain, noisy or
gradient background; photograph-like 4:3 and 3:4 pictures (a studio backdrop with noise and light
falloff, or a textured scene; one large object, an object on a third, or a person whose head touches
the top edge); and (if python_avatars + resvg_py are installed) a cartoon face pasted off-centre on a
noisy canvas. Kept fraction = subject pixels inside the crop / all subject pixels.

    .venv/bin/python benchmarks/trim_vs_centre.py [--n 60] [--photos 96] [--focus auto] [--markdown]
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


PHOTO_KINDS = ("plain", "textured")
PHOTO_LAYOUTS = ("large", "off-centre", "person-top")
PHOTO_SIZES = {"4:3": (320, 240), "3:4": (240, 320)}


def _photo_background(kind: str, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A studio backdrop (one colour, sensor noise, a soft light falloff) or a textured scene (1/f-like
    noise over several scales, like foliage or a wall)."""
    from PIL import Image

    base = rng.uniform(150, 235, 3).astype(np.float32)
    if kind == "plain":
        falloff = np.linspace(-8, 8, h, dtype=np.float32)[:, None, None]
        return np.clip(base + falloff + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.float32)
    texture = np.zeros((h, w), np.float32)
    for cells, amplitude in ((4, 40.0), (12, 25.0), (40, 15.0), (w, 8.0)):
        grid = rng.normal(0, 1, (max(2, cells * h // w), cells)).astype(np.float32)
        layer = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC))
        texture += amplitude * layer
    tint = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    return np.clip(base * 0.6 + texture[..., None] * tint, 0, 255).astype(np.float32)


def _shaded_blob(pixels: np.ndarray, mask: np.ndarray, colour, rng: np.random.Generator) -> None:
    """Paint `mask` with `colour`, shaded left-to-right and with fine noise, like a lit object."""
    h, w = mask.shape
    ramp = np.linspace(0.75, 1.15, w, dtype=np.float32)[None, :, None]
    body = np.asarray(colour, np.float32) * ramp + rng.normal(0, 4, (h, w, 3))
    pixels[mask] = np.clip(body, 0, 255)[mask]


def photo_case(index: int, seed: int = 0):
    """(image, subject mask, kind): a photograph-like 4:3 or 3:4 picture.

    Layouts: `large` (one big object filling most of the frame, the case where trimming a plain backdrop
    used to cut the subject itself), `off-centre` (the object on a third), `person-top` (a person whose
    head touches the top edge, cut by the bottom edge; the subject is the head).
    """
    from PIL import Image, ImageDraw

    rng_py, rng = random.Random(f"photo-{seed}-{index}"), np.random.default_rng([seed, 2000 + index])
    kind = PHOTO_KINDS[index % 2]
    layout = PHOTO_LAYOUTS[(index // 2) % 3]
    aspect = ("4:3", "3:4")[(index // 6) % 2]
    w, h = PHOTO_SIZES[aspect]
    pixels = _photo_background(kind, w, h, rng)
    mask_img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask_img)
    colour = [rng_py.uniform(20, 120), rng_py.uniform(20, 200), rng_py.uniform(60, 255)]
    rng_py.shuffle(colour)
    short = min(w, h)
    if layout == "large":
        ow, oh = rng_py.uniform(0.75, 0.92) * w, rng_py.uniform(0.55, 0.8) * h
        cx, cy = w / 2 + rng_py.uniform(-0.04, 0.04) * w, h / 2 + rng_py.uniform(-0.04, 0.04) * h
        draw.ellipse([cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2], fill=255)
    elif layout == "off-centre":
        d = rng_py.uniform(0.35, 0.5) * short
        third = rng_py.choice((1 / 3, 2 / 3))
        cx, cy = (third * w, h / 2 + rng_py.uniform(-0.1, 0.1) * h) if w > h else (w / 2 + rng_py.uniform(-0.1, 0.1) * w, third * h)
        cx, cy = min(max(cx, d / 2 + 2), w - d / 2 - 2), min(max(cy, d / 2 + 2), h - d / 2 - 2)
        draw.ellipse([cx - d / 2, cy - d / 2, cx + d / 2, cy + d / 2], fill=255)
    else:
        head = rng_py.uniform(0.28, 0.36) * short
        cx, top = w / 2 + rng_py.uniform(-0.15, 0.15) * w, rng_py.uniform(0, 0.02) * h
        shoulders = rng_py.uniform(1.9, 2.6) * head
        neck_y = top + head * 1.1
        draw.polygon([(cx - head * 0.25, neck_y - 4), (cx + head * 0.25, neck_y - 4), (cx + shoulders / 2, neck_y + head * 0.5),
                      (cx + shoulders / 2, h), (cx - shoulders / 2, h), (cx - shoulders / 2, neck_y + head * 0.5)], fill=128)
        draw.ellipse([cx - head * 0.4, top, cx + head * 0.4, top + head * 1.1], fill=255)
    labels = np.asarray(mask_img)
    _shaded_blob(pixels, labels > 0, colour, rng)
    if layout == "person-top":
        skin = rng_py.choice(((224, 172, 140), (180, 120, 90), (120, 80, 60), (240, 200, 170)))
        _shaded_blob(pixels, labels > 200, skin, rng)
    mask = labels > 200 if layout == "person-top" else labels > 127
    return Image.fromarray(pixels.astype(np.uint8)), mask, f"photo/{aspect}/{kind}/{layout}"


def run(n: int = 60, size: int = 64, seed: int = 0, faces: int = 10, photos: int = 96,
        **policy) -> dict[str, dict[str, float]]:
    """Mean kept fraction per case kind for ours and for centre crop, the number of images where ours kept
    less than the centre crop (by > 0.5% of the subject), and reason counts. `policy`: standardize's options."""
    from ldmkit.data.trim import standardize

    cases = [shape_case(i, seed) for i in range(n)]
    cases += [photo_case(i, seed) for i in range(photos)]
    try:
        cases += [face_case(i, seed) for i in range(faces)]
    except ImportError:
        pass
    table: dict[str, dict[str, float]] = {}
    for image, mask, kind in cases:
        _, record = standardize(image, size, **policy)
        row = table.setdefault(kind, {"n": 0, "ours": 0.0, "centre": 0.0, "worse": 0, "ours_min": 1.0})
        ours, centre = kept_fraction(mask, record.crop_box), kept_fraction(mask, centre_box(*image.size))
        row["n"] += 1
        row["ours"] += ours
        row["centre"] += centre
        row["worse"] += int(ours < centre - 0.005)
        row["ours_min"] = min(row["ours_min"], ours)
        row[f"reason:{record.reason}"] = row.get(f"reason:{record.reason}", 0) + 1
    for row in table.values():
        row["ours"] /= row["n"]
        row["centre"] /= row["n"]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--faces", type=int, default=10)
    parser.add_argument("--photos", type=int, default=96, help="photograph-like cases (12 kinds, 4:3 and 3:4)")
    parser.add_argument("--focus", default="auto", choices=("auto", "face", "saliency", "centre"))
    parser.add_argument("--no-trim", action="store_true", help="keep uniform borders (standardize trim=False)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    table = run(args.n, faces=args.faces, photos=args.photos, focus=args.focus, trim=not args.no_trim)
    if args.markdown:
        print("| case | n | ldmkit `standardize` | centre crop | worst image (ours) | images where ours < centre |")
        print("|---|---|---|---|---|---|")
        for kind, row in sorted(table.items()):
            print(f"| {kind} | {int(row['n'])} | {row['ours']:.3f} | {row['centre']:.3f} | {row['ours_min']:.3f} | {int(row['worse'])} |")
        return 0
    print(f"{'case':<34}{'n':>4}{'ours kept':>11}{'centre kept':>13}{'ours min':>10}{'worse':>7}  reasons")
    for kind, row in sorted(table.items()):
        reasons = ", ".join(f"{k[7:]} {int(v)}" for k, v in sorted(row.items()) if k.startswith("reason:"))
        print(f"{kind:<34}{int(row['n']):>4}{row['ours']:>11.3f}{row['centre']:>13.3f}{row['ours_min']:>10.3f}"
              f"{int(row['worse']):>7}  {reasons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
