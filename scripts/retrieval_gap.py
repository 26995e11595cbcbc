"""Prompt retrieval of two models (or two sampling settings) on the same prompts, prompt by prompt (issue 17's
ship rule for the taught emoji): top-1 / top-5 of both and their paired difference, with bootstrap 95% intervals.

    ldmkit eval src/ldmkit/default_model --clip src/ldmkit/default_model ... --sample-seed 0 -o base-s0
    ldmkit eval CANDIDATE --clip src/ldmkit/default_model ... --sample-seed 0 -o cand-s0     # the same options
    python scripts/retrieval_gap.py base-s0 cand-s0 [base-s1 cand-s1 ...]

Each pair must share its prompts (in order) and its dual encoder (`--clip`); several pairs (e.g. sets of 100
drawn with --sample-seed 0, 1, 2) are pooled, each image ranked among its own set's distinct prompts, as eval
ranks them. The images are read back from the eval folders and scored again, so runs from any ldmkit version
work; the numbers equal each run's own retrieval_top1 / top5.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ldmkit.errors import UsageError
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


def ranks(dual, folder: Path, run: dict) -> np.ndarray:
    """1-based rank of each image's own prompt among the run's distinct prompts (as `ldmkit eval` ranks them)."""
    prompts = [record["prompt"] for record in run["images"]]
    images = [Image.open(folder / record["file"]).convert("RGB") for record in run["images"]]
    return own_prompt_ranks(dual, image_embeddings(dual, images), prompts, list(range(len(prompts))))[1].ranks


def fmt(ci) -> str:
    return f"{ci.estimate:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]"


def main(folders: list[Path], n_boot: int = 1000) -> None:
    if not 2 <= n_boot <= 100_000:
        raise UsageError(f"--n-boot must be in 2..100000, got {n_boot}")
    if len(folders) < 2 or len(folders) % 2:
        raise UsageError("give eval folders in pairs: BASE OTHER [BASE OTHER ...]")
    duals, base, other = {}, [], []
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
        base.append(ranks(duals[clip], base_dir, runs[0]))
        other.append(ranks(duals[clip], other_dir, runs[1]))
    base, other = np.concatenate(base), np.concatenate(other)
    print(f"{len(base)} prompts in {len(folders) // 2} set(s); base: {folders[0]}, other: {folders[1]}")
    for k in (1, 5):
        hits_base, hits_other = (base <= k).astype(float), (other <= k).astype(float)
        cis = [bootstrap_ci(v, n_boot=n_boot) for v in (hits_base, hits_other, hits_other - hits_base)]
        print(f"top-{k}: base {cis[0].estimate:.3f} [{cis[0].low:.3f}, {cis[0].high:.3f}], "
              f"other {cis[1].estimate:.3f} [{cis[1].low:.3f}, {cis[1].high:.3f}], other - base {fmt(cis[2])}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="eval folders in pairs: BASE OTHER [BASE OTHER ...]")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    args = parser.parse_args()
    try:
        main(args.folders, args.n_boot)
    except UsageError as err:
        sys.exit(f"error: {err}")
