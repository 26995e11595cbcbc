"""Dataset statistics: counts, captions per image, caption lengths, vocabulary, image sizes, labels, splits.

    stats = dataset_stats(CaptionDataset.open(root))   # a JSON-ready dict
    write_stats(stats, Path("stats/"))                  # stats.json + PNG plots (matplotlib, lazily)
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path

from ldmkit.data.report import accounting_line
from ldmkit.data.splits import split_ids
from ldmkit.errors import UsageError, printable, shown

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
TOP_WORDS = 30
TOP_SIZES = 20
TOP_LABEL_VALUES = 10


def dataset_stats(dataset) -> dict:
    """Everything `ldmkit data stats` reports, as plain JSON types."""
    per_image = [len(s.captions) for s in dataset.samples]
    lengths, vocab = [], Counter()
    for sample in dataset.samples:
        for caption in sample.captions:
            words = WORD.findall(caption.lower())
            lengths.append(len(words))
            vocab.update(words)
    sizes = image_sizes(dataset)
    return {
        "format": dataset.format,
        "images": len(dataset),
        "captions": sum(per_image),
        **dataset.report.accounting(len(dataset)),  # the same tally as `data check`
        "converted": dict(sorted(dataset.report.converted.items())),
        "captions_per_image": {**summary(per_image), "histogram": histogram(per_image)},
        "caption_words": {**summary(lengths), "histogram": histogram(lengths)},
        "vocabulary": {"size": len(vocab), "top": [[w, n] for w, n in vocab.most_common(TOP_WORDS)]},
        "image_sizes": size_stats(sizes),
        "labels": label_stats(dataset.samples),
        "classes": class_stats(dataset) if dataset.format == "classfolders" else {},
        "splits": {name: len(ids) for name, ids in split_ids(s.image_id for s in dataset.samples).items()},
    }


def summary(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {"min": min(values), "mean": round(statistics.fmean(values), 4),
            "median": float(statistics.median(values)), "max": max(values)}


def histogram(values: list[int]) -> dict[str, int]:
    """value -> count for small integers (JSON keys are strings), in increasing order."""
    return {str(k): n for k, n in sorted(Counter(values).items())}


def image_sizes(dataset) -> list[tuple[int, int]]:
    """(width, height) per sample, from the dataset's checks or else the file header."""
    from ldmkit.data.images import BadImage, check_image

    out = []
    for sample in dataset.samples:
        check = dataset.checks.get(sample.image_id)
        if check is None:
            try:
                check = check_image(sample.path, full=False)
            except BadImage:
                continue
        out.append(check.size)
    return out


def size_stats(sizes: list[tuple[int, int]]) -> dict:
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    aspects = Counter(aspect_bucket(w, h) for w, h in sizes)
    common = Counter(f"{w}x{h}" for w, h in sizes).most_common(TOP_SIZES)
    return {"width": summary(widths), "height": summary(heights), "distinct": len(set(sizes)),
            "most_common": [[s, n] for s, n in common], "aspect": dict(sorted(aspects.items()))}


def aspect_bucket(width: int, height: int) -> str:
    ratio = width / height
    if ratio < 0.8:
        return "portrait (<0.8)"
    if ratio <= 1.25:
        return "square (0.8-1.25)"
    return "landscape (>1.25)"


def label_stats(samples) -> dict:
    """label key -> how many samples carry it, how many distinct values, the most common ones."""
    values: dict[str, Counter] = {}
    for sample in samples:
        for key, value in sample.labels.items():
            values.setdefault(key, Counter())[value] += 1
    return {key: {"samples": sum(c.values()), "distinct": len(c),
                  "top": [[v, n] for v, n in c.most_common(TOP_LABEL_VALUES)]}
            for key, c in sorted(values.items())}


def class_stats(dataset) -> dict[str, dict]:
    """Class folder -> {"images": n, "caption": the caption its images train with (the prompt to type)}."""
    out: dict[str, dict] = {}
    for sample in dataset.samples:
        folder = sample.labels.get("class")
        if folder is not None:
            entry = out.setdefault(folder, {"images": 0, "caption": sample.captions[0]})
            entry["images"] += 1
    return dict(sorted(out.items()))


def stats_lines(stats: dict) -> list[str]:
    """A short human-readable summary."""
    cpi, words, sizes = stats["captions_per_image"], stats["caption_words"], stats["image_sizes"]
    lines = [
        f"format: {stats['format']}",
        f"images: {stats['images']}  captions: {stats['captions']}",
        accounting_line(stats),
        f"captions per image: min {cpi['min']}  mean {cpi['mean']:.2f}  max {cpi['max']}",
        f"caption words: min {words['min']}  mean {words['mean']:.1f}  median {words['median']:g}  "
        f"max {words['max']}",
        f"vocabulary: {stats['vocabulary']['size']} words; top: "
        + ", ".join(w for w, _ in stats["vocabulary"]["top"][:10]),
        f"image sizes: {sizes['distinct']} distinct; width {sizes['width']['min']}-{sizes['width']['max']}, "
        f"height {sizes['height']['min']}-{sizes['height']['max']}; "
        + ", ".join(f"{k}: {n}" for k, n in sizes["aspect"].items()),
        "splits: " + ", ".join(f"{k} {n}" for k, n in stats["splits"].items()),
    ]
    classes = stats.get("classes") or {}
    for folder, info in list(classes.items())[:TOP_LABEL_VALUES]:
        lines.append(f"class {printable(folder)}: {info['images']} images, caption {shown(info['caption'])}")
    if len(classes) > TOP_LABEL_VALUES:
        lines.append(f"... {len(classes) - TOP_LABEL_VALUES} more classes (stats.json lists them all)")
    for key, info in stats["labels"].items():
        lines.append(f"label {printable(key)}: {info['distinct']} values on {info['samples']} images")
    for reason, n in stats["bad"].items():
        lines.append(f"bad {reason}: {n}")
    return lines


def require_matplotlib() -> None:
    """UsageError naming the extra to install when matplotlib (the plots of `data stats --out`) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("`data stats --out` draws its plots with matplotlib, which is not installed: "
                         "pip install 'ldmkit[data]' (or matplotlib); nothing was written") from None


def write_stats(stats: dict, out: Path) -> list[Path]:
    """stats.json and PNG plots in `out` (created); returns the written files. Without matplotlib nothing
    is written (UsageError)."""
    require_matplotlib()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "stats.json"]
    written[0].write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    hist = stats["captions_per_image"]["histogram"]
    written.append(_bar(out / "captions_per_image.png", list(hist), list(hist.values()),
                        "captions per image", "captions", "images"))
    hist = stats["caption_words"]["histogram"]
    written.append(_bar(out / "caption_length.png", list(hist), list(hist.values()),
                        "caption length", "words", "captions"))
    top = stats["vocabulary"]["top"][:20][::-1]
    written.append(_bar(out / "top_words.png", [w for w, _ in top], [n for _, n in top],
                        "most frequent words", "", "occurrences", horizontal=True))
    common = stats["image_sizes"]["most_common"][::-1]
    written.append(_bar(out / "image_sizes.png", [s for s, _ in common], [n for _, n in common],
                        "most common image sizes (width x height)", "", "images", horizontal=True))
    bad = stats["bad"]
    if bad:
        written.append(_bar(out / "bad_inputs.png", list(bad)[::-1], list(bad.values())[::-1],
                            "bad inputs by reason", "", "count", horizontal=True))
    return written


def _bar(path: Path, names: list[str], counts: list[int], title: str, xlabel: str, ylabel: str,
         *, horizontal: bool = False) -> Path:
    """One bar chart, drawn with matplotlib's object API (no pyplot state, Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, max(3.0, 0.25 * len(names) + 1) if horizontal else 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if horizontal:
        ax.barh(names, counts, color="#4c72b0")
        ax.set_xlabel(ylabel)
    else:
        ax.bar(names, counts, color="#4c72b0")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path
