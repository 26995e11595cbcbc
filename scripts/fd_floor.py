"""FD, KID and CMMD of an eval's generated images beside a real-vs-real floor at the same sample sizes, and all three
FDs extrapolated to infinitely many samples (issue 17's target 3: "FD <= 2x the real-vs-real floor").

    ldmkit data build avatars data/fresh-avatars-b --n 1100 --seed 102      # more real images of the same kind
    python scripts/fd_floor.py runs/eval-x/fresh1000 data/fresh-avatars-b

`ldmkit eval` measures its floor on two halves of its real references, so at 1,000 generated vs 1,024 real images
the floor is taken at 512 vs 512, where FD's small-sample bias is about twice as large. Here the floor is the same
number of images from OTHER_DATA (same split and label filter as the eval, framed as its model was trained) against
the eval's own real references: both FDs then carry the same bias, and their ratio is the one the target means.

A second floor is the one a latent diffusion model can reach: the same other real images sent through the model's
VAE (encode, decode) against the references. A UNet that drew the real latents exactly would score that.

It also prints every FD extrapolated to infinitely many samples (`frechet_distance_extrapolated`, Chong &
Forsyth's FD-infinity): the real-vs-real floor's true value is 0 at any size (its plug-in FD is bias alone), so
"<= 2x the real-vs-real floor" cannot hold at large sizes for any model that is not exact; the VAE's floor is
expected above 0. Where no second set of such images exists (the emoji: one glyph per design), leave OTHER_DATA out:
the floors are then one half of the eval's references against the other (half the size, so only FD-infinity
compares, and it needs about 7x the feature dim in references per half: ~1,700 references at 128-d).

    python scripts/fd_floor.py runs/eval-x/taught1000
"""

import argparse
import sys
from pathlib import Path

from ldmkit.errors import LdmkitError, UsageError
from ldmkit.evaluation.frechet import EXTRAPOLATION_FRACTIONS, frechet_distance_extrapolated

WIDTH = 36  # the pair names' column


def main(eval_dir: Path, other: Path | None) -> None:
    from ldmkit.evaluation.eval_folder import EvalFolder
    from ldmkit.evaluation.features import image_embeddings
    from ldmkit.evaluation.metric_sets import disjoint_halves, fidelity_metrics
    from ldmkit.evaluation.run import vae_round_trip
    from ldmkit.pipeline import Pipeline

    run = EvalFolder.read(eval_dir)
    generated, reference = run.generated(), run.references()
    dual = run.dual_encoder()
    emb = {"generated": image_embeddings(dual, generated), "reference": image_embeddings(dual, reference)}
    if other is None:  # no second set of such images (emoji): one half of the references against the other
        first, second = disjoint_halves(len(reference))
        floor_images, against = [reference[i] for i in first], emb["reference"][second]
        names = ("real half vs half (floor)", "half through the VAE vs half")
    else:
        floor_images, against = run.references(other, len(generated)), emb["reference"]
        names = ("other real vs real (floor)", "other real through the VAE vs real")
    round_trip = vae_round_trip(Pipeline.from_pretrained(run.model), floor_images)
    pairs = {"generated vs real": (emb["generated"], emb["reference"]),
             names[0]: (image_embeddings(dual, floor_images), against),
             names[1]: (image_embeddings(dual, round_trip), against)}
    notes: list[str] = []
    rows = {name: fidelity_metrics(*pair, 1000, 0, notes, extrapolate=False)  # print_extrapolated fits FD_inf
            for name, pair in pairs.items()}
    for name, row in rows.items():
        cells = "  ".join(f"{k.upper()} {row[k]['estimate']:.5g} [{row[k]['low']:.4g}, {row[k]['high']:.4g}]"
                          for k in ("fd", "kid", "cmmd") if k in row)
        print(f"{name:<{WIDTH}} {row['sizes'][0]} vs {row['sizes'][1]}  {cells}")
    fd = [row.get("fd", {}).get("estimate") for row in rows.values()]
    for floor, label in ((fd[1], "the floor"), (fd[2], "the VAE's floor")):
        if other is None:
            ratio = "not comparable (the floor's sets are half the size, and FD's bias grows as sets shrink)"
        elif fd[0] is None or floor is None:
            ratio = "undefined (FD skipped: see the notes)"
        else:
            ratio = f"{fd[0] / floor:.2f}" if floor > 0 else "undefined (floor <= 0)"
        print(f"FD ratio to {label}: {ratio}")
    print_extrapolated(pairs)
    for note in notes:
        print(f"note: {note}")


def print_extrapolated(pairs: dict) -> None:
    """FD-infinity of each (features, features) pair: the generated pair first, then the real-vs-real floor, then any
    other floor (the VAE's); a pair too small to fit is skipped alone; the generated value's ratio to each fitted
    floor whose interval lies above 0."""
    print(f"FD extrapolated to infinitely many samples (FD-infinity; subsets of {min(EXTRAPOLATION_FRACTIONS):.0%}-"
          f"{max(EXTRAPOLATION_FRACTIONS):.0%} of each set, interval from random halves):")
    fits = {}
    for name, pair in pairs.items():
        try:
            fits[name] = fit = frechet_distance_extrapolated(*pair)
        except UsageError as err:
            print(f"{name:<{WIDTH}} skipped: {err}")
            continue
        print(f"{name:<{WIDTH}} FD_inf {fit.estimate:.5g} [{fit.low:.4g}, {fit.high:.4g}]  bias slope {fit.slope:.4g}")
    generated = fits.get(next(iter(pairs)))
    for name, floor in list(fits.items())[1:]:
        if generated is None:
            break
        if floor.low <= 0:
            print(f"FD_inf ratio to {name}: undefined (its interval reaches 0: no distance beyond the small-sample "
                  "bias its plug-in FD carries)")
        else:
            print(f"FD_inf ratio to {name}: {generated.estimate / floor.estimate:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", type=Path, help="an `ldmkit eval` folder (one condition, run with --clip)")
    parser.add_argument("other", type=Path, nargs="?",
                        help="a dataset folder of more real images of the same kind (none: the floor is two halves "
                             "of the eval's references, compared as FD-infinity)")
    args = parser.parse_args()
    try:
        main(args.eval_dir, args.other)
    except LdmkitError as err:
        sys.exit(f"error: {err}")
