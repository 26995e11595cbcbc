"""Which asked value of one attribute an eval's images are read as (issue 17: where the hair colour goes).

    python scripts/attribute_confusion.py hair_color runs/eval-shipped/fresh1000 runs/eval-r2/fresh1000

For each `ldmkit eval` folder (template-caption prompt set): the shipped attribute classifier (or the one the
run named) reads every image; prints right / asked per value the captions ask for, and the most common misreads
as (asked, read) pairs. Scored as `scripts/model_gap.py` scores: a value counts when the caption names it.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path


def confusion(folder: Path, column: str, classifier=None):
    """(right per asked value, asked per value, misreads (asked, read) -> count, the classifier used)."""
    from PIL import Image

    from ldmkit.evaluation.attributes import split_rule
    from ldmkit.data.builtin.avatar_mentions import mentioned_values
    from ldmkit.evaluation.avatars_score import find_attribute_classifier
    from ldmkit.evaluation.run import EvalSettings, _held_out

    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        s = metrics["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SystemExit(f"error: {folder} holds no readable metrics.json of `ldmkit eval`") from None
    if s["prompt_set"] != "captions":
        raise SystemExit(f"error: {folder}: a template-caption run is needed, this one used {s['prompt_set']}")
    settings = EvalSettings(model=Path(s["model"]), data=Path(s["data"]), out=Path("unused"), split=s["split"],
                            n=s["n"], sample_seed=s.get("sample_seed"), where=s["where"], prompt_set=s["prompt_set"])
    _, captions, labels = _held_out(settings, split_rule(settings.model))
    if labels and column not in labels[0]:
        raise SystemExit(f"error: no label column {column!r}; the data has {', '.join(sorted(labels[0]))}")
    asked = [mentioned_values(row, caption) for row, caption in zip(labels, captions)]
    if classifier is None:
        classifier = find_attribute_classifier(settings.model, Path(s["attributes"]) if s.get("attributes") else None)
    records = metrics["conditions"][0]["images"]
    reads = classifier.predict_images([Image.open(folder / r["file"]).convert("RGB") for r in records])
    right, total, wrong = collections.Counter(), collections.Counter(), collections.Counter()
    for record, read in zip(records, reads):
        wanted = asked[record["prompt_index"]].get(column)
        if not wanted:
            continue
        key = "/".join(sorted(wanted))
        total[key] += 1
        if read.get(column) in wanted:
            right[key] += 1
        else:
            wrong[(key, read.get(column))] += 1
    return right, total, wrong, classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("column", help="label column, e.g. hair_color")
    parser.add_argument("folders", nargs="+", type=Path, help="ldmkit eval output folders")
    parser.add_argument("--top", type=int, default=8, help="misreads to list (default 8)")
    args = parser.parse_args()
    if not 1 <= args.top <= 100:
        parser.error(f"--top must be in 1..100, got {args.top}")
    classifier = None
    for folder in args.folders:
        right, total, wrong, classifier = confusion(folder, args.column, classifier)
        print(f"{folder}: {sum(right.values())} / {sum(total.values())} right")
        print("  per asked value: " + ", ".join(f"{v} {right[v]}/{total[v]}" for v in sorted(total)))
        print("  misreads (asked -> read): " + ", ".join(f"{a} -> {r} {n}" for (a, r), n in wrong.most_common(args.top)))


if __name__ == "__main__":
    main()
