"""A small evaluation inside UNet training (issue 5): alignment of the current EMA weights, every validation.

    row = evaluate_alignment(components, dual_encoder, captions, steps=10)
    append_eval_row(run_dir, row)          # RUN_DIR/eval.jsonl + RUN_DIR/eval_curve.png

For K held-out captions (one image each, seed i for caption i, sampled together by generate_batch) it
measures the CLIP score (100 x cosine, clipped at 0, as torchmetrics' CLIPScore) and prompt retrieval (is
the image's own caption the closest, or among the 5 closest, of the distinct captions), with the same
function as `ldmkit eval` (ldmkit.metrics.retrieval: ties count against the image). The full `ldmkit eval` (fidelity, intervals, reports) runs on a
finished model; this is the cheap curve to watch while training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

EVAL_LOG = "eval.jsonl"
EVAL_PLOT = "eval_curve.png"


@torch.no_grad()
def evaluate_alignment(components, dual_encoder, captions: list[str], *, steps: int, guidance: float | None = None,
                       attributes=None, labels: list[dict] | None = None) -> dict[str, float]:
    """CLIP score and prompt-retrieval top-1/top-5 of one generated image per caption (seed i for caption i);
    with an attribute classifier and each caption's row labels, also the attribute accuracy of the avatars
    among them (attribute_accuracy over attribute_images; `ldmkit eval`'s rule, see avatars_attribute_row)."""
    from ldmkit.data.images import images_to_pixels
    from ldmkit.metrics.retrieval import distinct_prompts, prompt_retrieval
    from ldmkit.pipeline import Pipeline

    device = next(components.unet.parameters()).device
    pipe = Pipeline(components, device=device)
    results = pipe.generate_batch(list(captions), list(range(len(captions))), steps=steps, guidance=guidance)
    image_emb = dual_encoder.encode_images(images_to_pixels([r.images[0] for r in results])).float().cpu()
    candidates, own = distinct_prompts(captions)
    text_emb = dual_encoder.encode_texts(candidates).float().cpu()
    sim = image_emb @ text_emb.T  # [K images, D distinct captions], unit vectors
    own_sim = sim[torch.arange(len(captions)), torch.from_numpy(own)]  # [K]
    ranks = prompt_retrieval(sim.double().numpy(), own)  # ties count against the image, as in `ldmkit eval`
    row = {"clip_score": float((100 * own_sim.clamp_min(0)).mean()), "retrieval_top1": ranks.top1,
           "retrieval_top5": ranks.top5, "prompts": len(captions)}
    if attributes is not None and labels is not None:
        row.update(avatars_attribute_row(attributes, [r.images[0] for r in results], captions, labels))
    return row


def avatars_attribute_row(classifier, images: list, captions: list[str], labels: list[dict]) -> dict[str, float]:
    """Over the images whose caption the avatars builder wrote: the mean per image of the share of the attributes
    its caption names that the classifier reads back (attributes it reads below 95% on real images left out).
    {} when none of them is such an avatar; {"attribute_images": 0} when the classifier reads none of the named
    attributes reliably (an undertrained one)."""
    from ldmkit.data.builtin.avatar_mentions import mentioned_values
    from ldmkit.metrics.attribute_match import attribute_hits

    asked = [mentioned_values(row, caption) for row, caption in zip(labels, captions)]
    keep = [i for i, wanted in enumerate(asked) if wanted]
    if not keep:
        return {}
    hits = [h for h in attribute_hits(classifier, [images[i] for i in keep], [asked[i] for i in keep]) if h]
    if not hits:
        return {"attribute_images": 0}
    per_image = [sum(h.values()) / len(h) for h in hits]
    return {"attribute_accuracy": sum(per_image) / len(per_image), "attribute_images": len(per_image)}


def read_eval_rows(run_dir: Path) -> list[dict]:
    """The rows of RUN_DIR/eval.jsonl (empty when the run has no in-training evaluation)."""
    path = Path(run_dir) / EVAL_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_eval_row(run_dir: Path, step: int, row: dict[str, float]) -> None:
    """Add the row for `step` to RUN_DIR/eval.jsonl (dropping rows of this or later steps that an interrupted
    attempt left behind, so a resumed run keeps one row per step) and redraw eval_curve.png. The row gets the
    training samples and wall time so far (`samples`, `elapsed_s`) from metrics.jsonl's row of that step."""
    from ldmkit.training.progress import metrics_row

    path = Path(run_dir) / EVAL_LOG
    progress = {k: v for k, v in (metrics_row(Path(run_dir), step) or {}).items() if k in ("samples", "elapsed_s")}
    rows = [r for r in read_eval_rows(run_dir) if r["step"] < step] + [{"step": step, **progress, **row}]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)
    _plot(rows, Path(run_dir) / EVAL_PLOT)


def _plot(rows: list[dict], png: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_samples = all("samples" in r for r in rows)
    x = [r["samples"] if by_samples else r["step"] for r in rows]
    panels = 3 if any("attribute_accuracy" in r for r in rows) else 2
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), dpi=100)
    axes[0].plot(x, [r["clip_score"] for r in rows], marker="o")
    axes[0].set_title("CLIP score")
    for key in ("retrieval_top1", "retrieval_top5"):
        axes[1].plot(x, [r[key] for r in rows], marker="o", label=key.replace("retrieval_", ""))
    axes[1].set_title(f"prompt retrieval among {rows[-1]['prompts']}")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    if panels == 3:
        scored = [(xi, r["attribute_accuracy"]) for xi, r in zip(x, rows) if "attribute_accuracy" in r]
        axes[2].plot(*zip(*scored), marker="o")
        axes[2].set_title(f"avatars attribute accuracy ({rows[-1].get('attribute_images', 0)} images)")
        axes[2].set_ylim(0, 1)
    for ax in axes:
        ax.set_xlabel("training samples" if by_samples else "step")
        ax.grid(alpha=0.3)
    from ldmkit.training.progress import save_figure

    save_figure(fig, png)
