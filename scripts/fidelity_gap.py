"""Paired difference (B - A) of FD, KID and CMMD between two evals of the same prompts and seeds against the same
real images: issue 17's ship rule asks whether a candidate's fidelity is at least as good as the shipped model's.

    ldmkit eval MODEL_A ... --out runs/eval-a/fresh1000 --seed-per-image
    ldmkit eval MODEL_B ... --out runs/eval-b/fresh1000 --seed-per-image     # the same data, split, --n, seeds
    python scripts/fidelity_gap.py runs/eval-a/fresh1000 runs/eval-b/fresh1000

Two separate intervals (each eval's own FD [low, high]) overlap even where one model is reliably worse: each
holds the noise of which prompts and which real images were drawn, which both models share. Here one bootstrap
resamples the prompts (both models' images of a prompt together) and the real images, so that shared noise
cancels (metric_sets.fidelity_difference). An interval above 0 means B is further from the real images than A.
Both evals must use one dual encoder (--clip), one prompt list and one seed per image.
"""

import argparse
import sys
from pathlib import Path

from ldmkit.errors import LdmkitError, UsageError

SAME_SETTINGS = ("data", "split", "where", "n", "sample_seed", "prompt_set", "clip", "fit")
"""Settings two evals must share for their images to pair and their references to be the same images."""
LABELS = {"fd": "FD", "kid": "KID", "cmmd": "CMMD"}


def main(a_dir: Path, b_dir: Path, n_boot: int = 1000, seed: int = 0) -> dict:
    from ldmkit.evaluation.eval_folder import EvalFolder
    from ldmkit.evaluation.features import image_embeddings
    from ldmkit.evaluation.frechet import frechet_distance
    from ldmkit.evaluation.kernel_metrics import PolynomialKernel, cmmd, mmd2
    from ldmkit.evaluation.metric_sets import fidelity_difference

    a, b = EvalFolder.read(a_dir), EvalFolder.read(b_dir)
    check_paired(a, b)
    dual = a.dual_encoder()
    emb_a, emb_b = image_embeddings(dual, a.generated()), image_embeddings(dual, b.generated())
    reference = image_embeddings(dual, a.references())
    metrics = {"fd": frechet_distance, "kid": lambda x, y: mmd2(x, y, PolynomialKernel()), "cmmd": cmmd}
    diff = fidelity_difference(emb_a, emb_b, reference, n_boot, seed)
    print(f"A: {a_dir}\nB: {b_dir}\n{diff['sizes'][0]} image pairs vs {diff['sizes'][1]} real images")
    for key, label in LABELS.items():
        d, metric = diff[key], metrics[key]
        print(f"{label:<5} A {metric(emb_a, reference):.5g}  B {metric(emb_b, reference):.5g}  "
              f"B - A {d['estimate']:+.5g} [{d['low']:+.4g}, {d['high']:+.4g}]  {verdict(d)}")
    return diff


def check_paired(a, b) -> None:
    """UsageError unless the two evals share their settings, prompts and per-image prompts and seeds."""
    differ = [key for key in SAME_SETTINGS if a.settings.get(key) != b.settings.get(key)]
    if differ:
        raise UsageError(f"the evals differ in {', '.join(differ)}; pair only evals of one prompt set "
                         "against one reference set with one --clip")
    if a.metrics["data"]["prompts"] != b.metrics["data"]["prompts"]:
        raise UsageError("the evals' prompt lists differ")
    framing_a, framing_b = ({k: v for k, v in run.metrics["data"]["reference_framing"].items() if k != "source"}
                            for run in (a, b))
    if framing_a != framing_b:
        raise UsageError(f"the evals framed their references differently ({framing_a} vs {framing_b}: the models "
                         "were trained on differently framed images)")
    pairs_a, pairs_b = ([(r.get("prompt_index"), r.get("seed")) for r in run.images] for run in (a, b))
    if pairs_a != pairs_b:
        raise UsageError("the evals' images do not pair by prompt and seed: run both with the same --n, --seeds and "
                         "--seed-per-image")


def verdict(d: dict) -> str:
    if d["low"] > 0:
        return "B further from the real images (interval above 0)"
    if d["high"] < 0:
        return "B closer to the real images (interval below 0)"
    return "not separated (interval holds 0)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="an `ldmkit eval` folder (one condition, run with --clip): the baseline")
    parser.add_argument("b", type=Path, help="an eval of the same prompts, seeds and references: the candidate")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = parser.parse_args()
    try:
        if not 2 <= args.n_boot <= 100_000:
            raise UsageError(f"--n-boot must be 2..100000; got {args.n_boot}")
        if not 0 <= args.seed < 2**63:
            raise UsageError(f"--seed must be 0..2**63-1; got {args.seed}")
        main(args.a, args.b, args.n_boot, args.seed)
    except LdmkitError as err:
        sys.exit(f"error: {err}")
