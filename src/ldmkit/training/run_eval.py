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
def evaluate_alignment(components, dual_encoder, captions: list[str], *, steps: int, guidance: float | None = None
                       ) -> dict[str, float]:
    """CLIP score and prompt-retrieval top-1/top-5 of one generated image per caption (seed i for caption i)."""
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
    return {"clip_score": float((100 * own_sim.clamp_min(0)).mean()), "retrieval_top1": ranks.top1,
            "retrieval_top5": ranks.top5, "prompts": len(captions)}


def read_eval_rows(run_dir: Path) -> list[dict]:
    """The rows of RUN_DIR/eval.jsonl (empty when the run has no in-training evaluation)."""
    path = Path(run_dir) / EVAL_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_eval_row(run_dir: Path, step: int, row: dict[str, float]) -> None:
    """Add the row for `step` to RUN_DIR/eval.jsonl (dropping rows of this or later steps that an interrupted
    attempt left behind, so a resumed run keeps one row per step) and redraw eval_curve.png."""
    path = Path(run_dir) / EVAL_LOG
    rows = [r for r in read_eval_rows(run_dir) if r["step"] < step] + [{"step": step, **row}]
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

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    a.plot(steps, [r["clip_score"] for r in rows], marker="o")
    a.set_title("CLIP score")
    for key in ("retrieval_top1", "retrieval_top5"):
        b.plot(steps, [r[key] for r in rows], marker="o", label=key.replace("retrieval_", ""))
    b.set_title(f"prompt retrieval among {rows[-1]['prompts']}")
    b.set_ylim(0, 1)
    b.legend()
    for ax in (a, b):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    from ldmkit.training.progress import save_figure

    save_figure(fig, png)
