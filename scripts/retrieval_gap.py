"""Prompt retrieval of two models (or two sampling settings) on the same prompts, prompt by prompt (issue 17's
ship rule for the taught emoji): top-1 / top-5 and the CLIP score of both and their paired differences, with
bootstrap 95% intervals.

    ldmkit eval src/ldmkit/default_model --clip src/ldmkit/default_model ... --sample-seed 0 -o base-s0
    ldmkit eval CANDIDATE --clip src/ldmkit/default_model ... --sample-seed 0 -o cand-s0     # the same options
    python scripts/retrieval_gap.py base-s0 cand-s0 [base-s1 cand-s1 ...] [--by group]

Each pair must share its prompts (in order) and its dual encoder (`--clip`); several pairs (e.g. sets of 100
drawn with --sample-seed 0, 1, 2) are pooled, each image ranked among its own set's distinct prompts, as eval
ranks them. The images are read back from the eval folders and scored again, so runs from any ldmkit version
work; the numbers equal each run's own retrieval_top1 / top5 / clip_score. `--by COLUMN` adds top-1 per value of
that label column of the evaluated images (e.g. the emoji's `group`), with the real images' top-1 (the eval's real
references, framed as the base run's model was trained) as each value's ceiling.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ldmkit.errors import UsageError
from ldmkit.evaluation.clip_score import clip_score
from ldmkit.evaluation.features import find_dual_encoder, image_embeddings
from ldmkit.evaluation.metric_sets import own_prompt_ranks
from ldmkit.metrics.bootstrap import bootstrap_ci


def read_run(folder: Path) -> dict:
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        (condition,) = metrics["conditions"]
        return {"settings": metrics["settings"], "images": condition["images"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{folder}: not an `ldmkit eval` run with one condition ({err!r})") from None


def ranks(dual, folder: Path, run: dict) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of each image's own prompt among the run's distinct prompts (as `ldmkit eval` ranks them), and
    each image's CLIP score against its own prompt (as eval's clip_score)."""
    prompts = [record["prompt"] for record in run["images"]]
    images = [Image.open(folder / record["file"]).convert("RGB") for record in run["images"]]
    image_emb = image_embeddings(dual, images)
    own_text, retrieval = own_prompt_ranks(dual, image_emb, prompts, list(range(len(prompts))))
    return retrieval.ranks, clip_score(image_emb, own_text).per_pair


def held_out_rows(folder: Path, run: dict) -> tuple[list[dict], list]:
    """The labels of the run's evaluated images, in order, and their real images framed as its model was trained
    (at the generated images' size)."""
    from ldmkit.evaluation.attributes import split_rule
    from ldmkit.evaluation.framing import reference_framing
    from ldmkit.evaluation.run import EvalSettings, _held_out

    s = run["settings"]
    settings = EvalSettings(model=Path(s["model"]), data=Path(s["data"]), out=Path("unused"), split=s["split"],
                            n=s["n"], sample_seed=s.get("sample_seed"), where=s["where"], prompt_set=s["prompt_set"])
    held_out, _, labels = _held_out(settings, split_rule(settings.model))
    framing = reference_framing(settings.model, s.get("fit"))
    size = Image.open(folder / run["images"][0]["file"]).size[0]
    real = [framing(held_out.image(i), size) for i in range(len(labels))]
    order = [record["prompt_index"] for record in run["images"]]
    return [labels[i] for i in order], [real[i] for i in order]


def by_column(column: str, values: list[str], base, other, real, n_boot: int) -> None:
    """Top-1 of both runs and of the real images per value of `column`, fewest base hits first."""
    print(f"\ntop-1 by {column} (n; base, other, other - base; real images):")
    rows = []
    for value in sorted(set(values)):
        pick = np.array([v == value for v in values])
        hits = [(r[pick] == 1).astype(float) for r in (base, other, real)]
        rows.append((hits[0].mean(), value, pick.sum(), hits))
    for _, value, n, (b, o, r) in sorted(rows):
        diff = fmt(bootstrap_ci(o - b, n_boot=n_boot)) if n > 1 else f"{o.mean() - b.mean():+.3f}"
        print(f"  {value or '(none)':<24} {n:>4}  {b.mean():.3f}  {o.mean():.3f}  {diff}  real {r.mean():.3f}")


def fmt(ci) -> str:
    return f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def main(folders: list[Path], n_boot: int = 1000, by: str | None = None) -> None:
    if not 2 <= n_boot <= 100_000:
        raise UsageError(f"--n-boot must be in 2..100000, got {n_boot}")
    if len(folders) < 2 or len(folders) % 2:
        raise UsageError("give eval folders in pairs: BASE OTHER [BASE OTHER ...]")
    duals, base, other, real, values, base_scores, other_scores = {}, [], [], [], [], [], []
    for base_dir, other_dir in zip(folders[::2], folders[1::2]):
        runs = [read_run(base_dir), read_run(other_dir)]
        if [r["prompt"] for r in runs[0]["images"]] != [r["prompt"] for r in runs[1]["images"]]:
            raise UsageError(f"{base_dir} and {other_dir} have different prompts; compare runs of the same eval options")
        clips = {run["settings"].get("clip") for run in runs}
        if len(clips) != 1 or None in clips:
            raise UsageError(f"{base_dir} and {other_dir}: both runs must name the same --clip")
        clip = clips.pop()
        if clip not in duals:
            duals[clip] = find_dual_encoder(Path(clip), Path(clip))
        for run_dir, run, run_ranks, run_scores in ((base_dir, runs[0], base, base_scores),
                                                   (other_dir, runs[1], other, other_scores)):
            rank, score = ranks(duals[clip], run_dir, run)
            run_ranks.append(rank)
            run_scores.append(score)
        if by is not None:
            labels, images = held_out_rows(base_dir, runs[0])
            if any(by not in row for row in labels):
                raise UsageError(f"--by {by}: the evaluated images of {base_dir} have no label column {by!r}")
            values += [row[by] for row in labels]
            prompts = [record["prompt"] for record in runs[0]["images"]]
            real.append(own_prompt_ranks(duals[clip], image_embeddings(duals[clip], images), prompts,
                                         list(range(len(prompts))))[1].ranks)
    base, other = np.concatenate(base), np.concatenate(other)
    print(f"{len(base)} prompts in {len(folders) // 2} set(s); base: {folders[0]}, other: {folders[1]}")
    for k in (1, 5):
        hits_base, hits_other = (base <= k).astype(float), (other <= k).astype(float)
        cis = [bootstrap_ci(v, n_boot=n_boot) for v in (hits_base, hits_other, hits_other - hits_base)]
        print(f"top-{k}: base {cis[0].estimate:.3f} [{cis[0].low:.3f}, {cis[0].high:.3f}], "
              f"other {cis[1].estimate:.3f} [{cis[1].low:.3f}, {cis[1].high:.3f}], other - base {fmt(cis[2])}")
    score_base, score_other = np.concatenate(base_scores), np.concatenate(other_scores)
    cis = [bootstrap_ci(v, n_boot=n_boot) for v in (score_base, score_other, score_other - score_base)]
    print(f"CLIP score: base {cis[0].estimate:.2f} [{cis[0].low:.2f}, {cis[0].high:.2f}], "
          f"other {cis[1].estimate:.2f} [{cis[1].low:.2f}, {cis[1].high:.2f}], "
          f"other - base {cis[2].estimate:+.2f} [{cis[2].low:+.2f}, {cis[2].high:+.2f}]")
    if by is not None:
        by_column(by, values, base, other, np.concatenate(real), n_boot)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="eval folders in pairs: BASE OTHER [BASE OTHER ...]")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--by", metavar="COLUMN", help="also top-1 per value of this label column (e.g. group)")
    args = parser.parse_args()
    try:
        main(args.folders, args.n_boot, args.by)
    except UsageError as err:
        sys.exit(f"error: {err}")
