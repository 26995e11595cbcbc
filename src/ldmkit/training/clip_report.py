"""The before/after report of `ldmkit train clip`: held-out retrieval of the starting model (the ORIGINAL one
when fine-tuning) and of the trained one on the same split, with bootstrap intervals and the change.

    hits = retrieval_hits(image_emb, text_emb, owner)       # per-image / per-caption hits at k = 1, 5, 10
    comparison = compare(before_hits, after_hits)          # estimates, 95% CIs, paired change, relative change
    print(format_table(report))                            # the table `train clip` prints at the end

Retrieval is `ldmkit.metrics.retrieval.cross_modal_retrieval` (image->text is a hit when ANY caption of the
image is among the top k, text->image when the caption's own image is) and the intervals are
`ldmkit.metrics.bootstrap.bootstrap_ci` over images (image->text) or captions (text->image). The change's
interval resamples the same items for before and after (a paired bootstrap of the per-item difference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

RECALL_AT = (1, 5, 10)
REPORT_FILE = "clip_report.json"
N_BOOT = 1000
LABELS = {"i2t": "image->text", "t2i": "text->image"}


def retrieval_hits(image_emb, text_emb, owner, ks: tuple[int, ...] = RECALL_AT) -> dict[str, np.ndarray]:
    """{"i2t_r@k": (n_images,) bool, "t2i_r@k": (n_texts,) bool} for each k; owner[j] = image of caption j."""
    from ldmkit.metrics.retrieval import cross_modal_retrieval

    sim = np.asarray(image_emb, dtype=np.float64) @ np.asarray(text_emb, dtype=np.float64).T
    result = cross_modal_retrieval(sim, np.asarray(owner, dtype=np.int64))
    hits = {f"i2t_r@{k}": result.image_ranks <= k for k in ks}
    hits.update({f"t2i_r@{k}": result.text_ranks <= k for k in ks})
    return hits


def relative_change(before: float, after: float) -> float | None:
    """(after - before) / before; None when before is 0 (no relative change is defined)."""
    return None if before == 0 else (after - before) / before


def compare(before: dict[str, np.ndarray], after: dict[str, np.ndarray], *, n_boot: int = N_BOOT,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per metric: before and after [estimate, low, high], the paired change [estimate, low, high] and the
    relative change of the estimates (None from 0)."""
    from ldmkit.metrics.bootstrap import bootstrap_ci

    out = {}
    for key in before:
        b, a = before[key].astype(np.float64), after[key].astype(np.float64)
        ci_b, ci_a = bootstrap_ci(b, n_boot=n_boot, seed=seed), bootstrap_ci(a, n_boot=n_boot, seed=seed)
        change = bootstrap_ci(a - b, n_boot=n_boot, seed=seed)
        out[key] = {"before": list(ci_b), "after": list(ci_a), "change": list(change),
                    "relative": relative_change(ci_b.estimate, ci_a.estimate)}
    return out


def _percent(value: float | None) -> str:
    return "n/a (from 0)" if value is None else f"{value * 100:+.0f}%"


def format_table(report: dict[str, Any]) -> str:
    """The comparison of a clip_report.json as a fixed-width table (one row per direction and k)."""
    rows = report.get("comparison") or {}
    head = (f"held-out retrieval, {report.get('split')} split: {report.get('images')} images, "
            f"{report.get('captions')} captions; before = {report.get('start')}")
    lines = [head, f"{'metric':<17} {'before':<22} {'after':<22} {'change':<24} {'relative':<9} chance"]
    for key, row in rows.items():
        direction, k = key.split("_r@")
        b, a, c = row["before"], row["after"], row["change"]
        chance = (report.get("before") or {}).get(f"{key}_chance")
        lines.append(f"{LABELS[direction] + ' R@' + k:<17} {b[0]:.3f} [{b[1]:.3f}, {b[2]:.3f}]   "
                     f"{a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}]   {c[0]:+.3f} [{c[1]:+.3f}, {c[2]:+.3f}]   "
                     f"{_percent(row['relative']):<9} {'' if chance is None else f'{chance:.3f}'}")
    lines.append("image->text: a hit when ANY caption of the image is in the top k; [95% bootstrap interval]; "
                 "change: paired, same items; chance: a random ranking")
    return "\n".join(lines)


def report_table(run_dir: str | Path) -> str | None:
    """The table of RUN_DIR/clip_report.json, or None when the run has no before/after comparison."""
    path = Path(run_dir) / REPORT_FILE
    if not path.is_file():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    return format_table(report) if report.get("comparison") else None
