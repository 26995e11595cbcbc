"""Contact sheet of what `standardize` does to a dataset: original with boxes, result, reason.

Each cell shows the original scaled into a square (border-trim box in green, crop box in red,
focal point as a red dot) next to the standardized image, with the reason and the first caption.
"""

from __future__ import annotations

import random
from pathlib import Path

from ldmkit.errors import DataError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
COLUMNS = 4
TRIM_COLOUR = (0, 170, 0)
CROP_COLOUR = (220, 0, 0)
TEXT_HEIGHT = 24
MAX_IMAGES = 256
MAX_SIZE = 1024


def preview_dataset(root: Path, out: Path, *, n: int = 16, size: int = 64, seed: int = 0, policy: str = "crop",
                    focus: str = "auto", trim: bool = True) -> Path:
    """Write a PNG contact sheet of n images of the dataset at `root` standardized to `size`; returns its path.

    `out` is the PNG path (a folder gets `preview.png` inside it). Images are a seeded sample. policy,
    focus, trim: standardize's options (a recipe's data.trim.fit / focus / trim).
    """
    from PIL import Image, ImageDraw

    from ldmkit.data.trim import Standardizer

    if n < 1 or size < 8 or n > MAX_IMAGES or size > MAX_SIZE:
        raise UsageError(f"n must be in 1..{MAX_IMAGES} and size in 8..{MAX_SIZE}, got n={n}, size={size}")
    standardize = Standardizer(policy=policy, focus=focus, trim=trim)
    items = dataset_items(Path(root))
    if not items:
        raise DataError(f"no images found under {root} (looked for {', '.join(IMAGE_SUFFIXES)})")
    chosen = sorted(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    view = max(2 * size, 96)
    cell_w, cell_h = 2 * view + 12, view + TEXT_HEIGHT + 8
    rows = (len(chosen) + COLUMNS - 1) // COLUMNS
    sheet = Image.new("RGB", (COLUMNS * cell_w, rows * cell_h), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for slot, index in enumerate(chosen):
        path, caption = items[index]
        x, y = (slot % COLUMNS) * cell_w + 4, (slot // COLUMNS) * cell_h + 4
        try:
            with Image.open(path) as img:
                img.load()
                result, record = standardize(img, size)
                original = img.convert("RGB")
        except (OSError, ValueError) as exc:
            draw.text((x, y), f"unreadable: {path.name}\n{type(exc).__name__}", fill=(200, 0, 0))
            continue
        sheet.paste(_annotated(original, record, view), (x, y))
        sheet.paste(result.resize((view, view), Image.Resampling.NEAREST), (x + view + 4, y))
        label = f"{record.reason}: {caption}"
        draw.text((x, y + view + 2), label[: 2 * view // 6], fill=(20, 20, 20))
    out = Path(out)
    if out.is_dir() or out.suffix.lower() != ".png":
        out = out / "preview.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def _annotated(original, record, view: int):
    """The original fitted into a view x view square with the trim box, crop box and focal point drawn."""
    from PIL import Image, ImageDraw

    w, h = original.size
    # the crop box may reach outside the image (policy 'pad'): fit the union of image and crop box
    left, top = min(0, record.crop_box[0]), min(0, record.crop_box[1])
    right, bottom = max(w, record.crop_box[2]), max(h, record.crop_box[3])
    scale = view / max(right - left, bottom - top)
    canvas = Image.new("RGB", (view, view), (200, 200, 200))
    shown = original.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    canvas.paste(shown, (round(-left * scale), round(-top * scale)))
    draw = ImageDraw.Draw(canvas)

    def to_view(box):
        return [(box[0] - left) * scale, (box[1] - top) * scale, (box[2] - left) * scale - 1, (box[3] - top) * scale - 1]

    draw.rectangle(to_view(record.trim_box), outline=TRIM_COLOUR)
    draw.rectangle(to_view(record.crop_box), outline=CROP_COLOUR)
    fx, fy = (record.focus[0] - left) * scale, (record.focus[1] - top) * scale
    draw.ellipse([fx - 2, fy - 2, fx + 2, fy + 2], fill=CROP_COLOUR)
    return canvas


def dataset_items(root: Path) -> list[tuple[Path, str]]:
    """(image path, first caption) for every image: through CaptionDataset when that reader exists,
    else every image file under root (caption: the file name)."""
    try:
        from ldmkit.data.dataset import CaptionDataset
    except ImportError:
        CaptionDataset = None
    if CaptionDataset is not None:
        dataset = CaptionDataset.open(root)
        samples = getattr(dataset, "samples", dataset)
        return [(Path(s.path), s.captions[0] if s.captions else "") for s in samples]
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, p.stem) for p in files]
