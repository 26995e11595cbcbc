"""OUT/report.html from the metrics dict of `evaluate`: opens offline in any browser.

Inline CSS, no scripts, no remote resources: images are the PNGs saved next to the report (relative
paths) and plots are matplotlib (Agg) PNGs in OUT/plots/. Every number is shown with its 95% interval.
"""

from __future__ import annotations

import html
from pathlib import Path

REPORT_FILE = "report.html"
GRID_PROMPTS = 16  # prompt rows shown per grid; metrics.json lists every image
CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.p{text-align:left;max-width:320px}img.s{width:96px;image-rendering:pixelated}
.note{background:#fff8e0;padding:6px 10px;margin:4px 0;font-size:90%}code{background:#f3f3f3}"""

ALIGNMENT = (("clip_score", "CLIP score"), ("retrieval_top1", "retrieval top-1"), ("retrieval_top5", "retrieval top-5"))
FIDELITY = (("fd", "FD"), ("kid", "KID"), ("cmmd", "CMMD"), ("fd_inf", "FD-infinity"))


def write_report(metrics: dict, out: Path) -> Path:
    """Write OUT/report.html (and OUT/plots/*.png when a sweep has several values); returns the HTML path."""
    out = Path(out)
    plots = _plots(metrics, out)
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ldmkit eval</title><style>{CSS}</style>"
             "</head><body><h1>ldmkit evaluation</h1>", _summary(metrics)]
    parts += [f"<div class='note'>{e(note)}</div>" for note in metrics.get("notes", [])]
    parts.append("<h2>Metrics (estimate [95% bootstrap interval])</h2>" + _metric_table(metrics))
    parts += [f"<p><img src='{e(p)}' alt='{e(p)}'></p>" for p in plots]
    if metrics.get("training_eval"):
        parts.append("<h2>Evaluation during training (unet.eval_clip)</h2>" + _training_eval_table(metrics["training_eval"]))
    for condition in metrics["conditions"]:
        parts.append(f"<h2>Images: {e(condition['label'])}</h2>" + _grid(condition))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


TRAINING_EVAL_COLUMNS = (("step", "step", "{}"), ("samples", "samples", "{:,}"),
                         ("elapsed_s", "wall time (min)", "{:.1f}"), ("clip_score", "CLIP score", "{:.2f}"),
                         ("retrieval_top1", "retrieval top-1", "{:.3f}"),
                         ("retrieval_top5", "retrieval top-5", "{:.3f}"),
                         ("prompts", "prompts", "{}"), ("attribute_accuracy", "avatars attribute accuracy", "{:.3f}"),
                         ("attribute_images", "avatars scored", "{}"))
"""The columns of the in-training evaluation table: (key in eval.jsonl, heading, format); a column no row has
(runs logged before it existed) is left out, a row without it shows an en dash."""


def _training_eval_table(rows: list[dict]) -> str:
    columns = [c for c in TRAINING_EVAL_COLUMNS if any(c[0] in r for r in rows)]
    head = "<tr>" + "".join(f"<th>{heading}</th>" for _, heading, _ in columns) + "</tr>"

    def cell(row: dict, key: str, form: str) -> str:
        if key not in row:
            return "–"
        return form.format(row[key] / 60 if key == "elapsed_s" else row[key])

    body = "".join("<tr>" + "".join(f"<td>{cell(r, k, f)}</td>" for k, _, f in columns) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def fmt(ci: dict | None) -> str:
    """'12.3 [11.1, 13.4]' for an interval dict; an en dash when missing."""
    if not ci:
        return "–"
    return f"{ci['estimate']:.4g} [{ci['low']:.4g}, {ci['high']:.4g}]"


def _summary(metrics: dict) -> str:
    e = html.escape
    data, env, limits = metrics["data"], metrics["environment"], metrics["text_limits"]
    s = metrics["settings"]
    rows = [("model", f"{s['model']} (hash {env['model_hash']})"),
            ("data", f"{data['root']}, split {data['split']}: {data['evaluated_images']} captions "
                     f"({data['distinct_prompts']} distinct) of {data['images_in_split']} images, {data['image_size']} px"),
            ("seeds", ", ".join(map(str, s["seeds"])) + (" (caption i of seed S: seed S*N+i, noise per image)"
                                                       if s.get("seed_per_image") else " (shared by every caption)")),
            ("real images framed", _framing(data.get("reference_framing"))),
            ("dual encoder", env.get("dual_encoder", {}).get("path", "none")),
            ("captions over the generator's text limit",
             f"{limits['generator_truncated']} (limit {limits['generator_max_tokens']} tokens)")]
    if "scorer_truncated" in limits:
        rows.append(("captions over the scorer's text limit",
                     f"{limits['scorer_truncated']} (limit {limits['scorer_max_tokens']} tokens; scored truncated)"))
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in env["packages"].items())))
    return "<table>" + "".join(f"<tr><th>{e(k)}</th><td class='p'>{e(str(v))}</td></tr>" for k, v in rows) + "</table>"


def _framing(framing: dict | None) -> str:
    """'fill (source)' for the references' framing; metrics from before it was recorded used a plain resize."""
    if not framing:
        return "stretch (a plain resize: metrics written before the framing was recorded)"
    return f"{framing['fit']}, focus {framing['focus']}, trim {framing['trim']} ({framing['source']})"


def _metric_table(metrics: dict) -> str:
    e = html.escape
    columns = [(k, n) for k, n in ALIGNMENT + FIDELITY]
    header = ("<tr><th>condition</th>" + "".join(f"<th>{n}</th>" for _, n in columns)
              + "<th>shapes accuracy</th><th>avatars attribute accuracy</th></tr>")
    rows = []
    ref = metrics.get("reference", {})
    real = ref.get("real_images", {})
    floor = ref.get("real_vs_real", {})
    reference_row = {**real, **floor}
    rows.append(_row("real images (ceiling / real-vs-real floor)", reference_row))
    if ref.get("vae_round_trip"):
        rows.append(_row("real images through the VAE (the autoencoder's ceiling)", ref["vae_round_trip"]))
    for condition in metrics["conditions"]:
        rows.append(_row(condition["label"], condition["metrics"]))
    note = ("<p>Alignment (CLIP score, retrieval among the distinct evaluation captions): higher is better; the "
            "real-image row is the ceiling. Fidelity (FD, KID, CMMD in the dual encoder's image space, against all "
            "real images of the split): lower is better; the real-image row compares two disjoint halves of the real "
            "images, the floor at this sample size. FD-infinity is FD extrapolated to infinitely many samples: its "
            "small-sample bias removed, ~0 for two samples of one distribution and comparable across sample sizes; "
            "shown where each set holds ~7 images per feature dimension. Reranked (best-of-K) images were chosen with "
            "the same encoder that scores them, so their alignment gains are optimistic.</p>")
    return "<table>" + header + "".join(rows) + "</table>" + note + _shapes_table(metrics, e) + _avatars_table(metrics, e)


def _row(label: str, values: dict) -> str:
    e = html.escape
    cells = [fmt(values.get(key)) for key, _ in ALIGNMENT + FIDELITY]
    shapes = values.get("shapes", {}).get("mean")
    avatars = (values.get("avatars", {}).get("all") or {}).get("mean")
    return (f"<tr><td class='p'>{e(label)}</td>" + "".join(f"<td>{e(c)}</td>" for c in cells)
            + f"<td>{e(fmt(shapes))}</td><td>{e(fmt(avatars))}</td></tr>")


def _shapes_table(metrics: dict, e) -> str:
    ref = metrics.get("reference", {})
    sets = [("real images", ref.get("real_images", {}).get("shapes")),
            ("real images through the VAE", ref.get("vae_round_trip", {}).get("shapes"))]
    sets += [(c["label"], c["metrics"].get("shapes")) for c in metrics["conditions"]]
    sets = [(label, table) for label, table in sets if table]
    if not sets:
        return ""
    names = list(sets[0][1]["per_attribute"])
    head = "<tr><th>set</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>"
    body = "".join(f"<tr><td class='p'>{e(label)}</td>"
                   + "".join(f"<td>{e(fmt(table['per_attribute'].get(n)))}</td>" for n in names) + "</tr>"
                   for label, table in sets)
    return "<h3>Shapes attribute accuracy (read back with read_shapes)</h3><table>" + head + body + "</table>"


def _avatars_table(metrics: dict, e) -> str:
    """Per-attribute accuracy of avatars images (all / seen / unseen combinations) and what was excluded."""
    ref = metrics.get("reference", {})
    sets = [("real images", ref.get("real_images", {}).get("avatars")),
            ("real images through the VAE", ref.get("vae_round_trip", {}).get("avatars"))]
    sets += [(c["label"], c["metrics"].get("avatars")) for c in metrics["conditions"]]
    rows = [(f"{label} ({part})", scores[part]) for label, scores in sets if scores
            for part in ("all", "seen", "unseen") if scores.get(part)]
    if not rows:
        return ""
    names = sorted({n for _, table in rows for n in table["per_attribute"]})
    head = ("<tr><th>set</th><th>images</th><th>mean</th>" + "".join(f"<th>{e(n)}</th>" for n in names) + "</tr>")
    body = "".join(f"<tr><td class='p'>{e(label)}</td><td>{table['images']}</td><td>{e(fmt(table['mean']))}</td>"
                   + "".join(f"<td>{e(fmt(table['per_attribute'].get(n)))}</td>" for n in names) + "</tr>"
                   for label, table in rows)
    excluded = next((scores["excluded"] for _, scores in sets if scores), {})
    listed = ", ".join(f"{n} ({'no head' if a is None else f'{a:.1%}'})" for n, a in sorted(excluded.items()))
    note = (f"<p>Excluded (classifier below 95% on real held-out images, or without a head): {e(listed)}.</p>"
            if listed else "<p>No attribute excluded.</p>")
    return ("<h3>Avatars attribute accuracy (attribute classifier; only attributes the prompt mentions; "
            "unseen = attribute combinations held out of training)</h3><table>" + head + body + "</table>" + note)


def _grid(condition: dict) -> str:
    e = html.escape
    by_prompt: dict[int, list[dict]] = {}
    for record in condition["images"]:
        by_prompt.setdefault(record["prompt_index"], []).append(record)
    rows = []
    for index in sorted(by_prompt)[:GRID_PROMPTS]:
        records = by_prompt[index]
        cells = "".join(f"<td><img class='s' src='{e(r['file'])}' alt='seed {r['seed']}' "
                        f"title='seed {r['seed']}'><br>seed {r['seed']}</td>" for r in records)
        rows.append(f"<tr><td class='p'>{e(records[0]['prompt'])}</td>{cells}</tr>")
    more = len(by_prompt) - GRID_PROMPTS
    tail = f"<p>{more} more prompts: see metrics.json.</p>" if more > 0 else ""
    return "<table>" + "".join(rows) + "</table>" + tail


def _plots(metrics: dict, out: Path) -> list[str]:
    """Alignment and fidelity against the swept value (one line per best-of K); relative PNG paths."""
    sweep = metrics["settings"].get("sweep")
    conditions = metrics["conditions"]
    if not sweep or len(sweep["values"]) < 2 or not any(c["metrics"] for c in conditions):
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(exist_ok=True)
    labels = [str(v) for v in sweep["values"]]
    numeric = sweep["name"] != "sampler"
    ref = metrics.get("reference", {})
    reference = {**ref.get("real_images", {}), **ref.get("real_vs_real", {})}  # ceiling / floor values
    written = []
    for group, title in ((ALIGNMENT, "alignment"), (FIDELITY + (("shapes", "shapes accuracy"),), "fidelity")):
        keys = [(k, n) for k, n in group if any(k in c["metrics"] for c in conditions)]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
        for ax, (key, name) in zip(axes[0], keys):
            for k in sorted({c["best_of"] for c in conditions}):
                points = [(labels.index(str(c["sweep_value"])), _ci(c["metrics"], key))
                          for c in conditions if c["best_of"] == k and key in c["metrics"]]
                xs = [sweep["values"][i] if numeric else i for i, _ in points]
                mid = [ci["estimate"] for _, ci in points]
                # an estimate outside its interval (FD's small-sample bias; noted in metrics.json) draws no bar there
                err = [[max(0.0, ci["estimate"] - ci["low"]) for _, ci in points],
                       [max(0.0, ci["high"] - ci["estimate"]) for _, ci in points]]
                ax.errorbar(xs, mid, yerr=err, marker="o", capsize=3, label="best-of-1" if k == 1 else f"best-of-{k}")
            floor = _ci(reference, key)
            if floor:
                ax.axhline(floor["estimate"], color="gray", linestyle="--", label="real images")
            if not numeric:
                ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel(sweep["name"])
            ax.set_title(name)
            ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"plots/{title}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(name)
    return written


def _ci(values: dict, key: str) -> dict | None:
    value = values.get(key)
    if key == "shapes" and value:
        return value["mean"]
    return value
