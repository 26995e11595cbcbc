"""The attribute-accuracy ceiling a model's VAE allows, without generating anything (docs/quality.md).

    python scripts/vae_ceiling.py src/ldmkit/default_model runs/default/dataset [--vae runs/vae/final] [--n 200]

Scores the first N held-out avatars of DATA (the model's own split rule, as `ldmkit eval` uses it) with
the model's attribute classifier twice: as they are, and after a VAE encode -> decode. The same numbers
appear in `ldmkit eval`'s metrics.json under reference.vae_round_trip; this only skips the generation.
`--vae` round-trips through another model folder's VAE (e.g. a `train vae` run's final/) instead, so an
autoencoder can be judged before any UNet is trained on it.
"""

import argparse
import sys
from pathlib import Path

from ldmkit.evaluation.attributes import split_rule
from ldmkit.evaluation.framing import reference_framing
from ldmkit.evaluation.run import EvalSettings, _avatars_scorer, _held_out, vae_round_trip
from ldmkit.pipeline import Pipeline


def main(model: Path, data: Path, n: int = 200, vae: Path | None = None) -> None:
    settings = EvalSettings(model=model, data=data, out=Path("unused"), n=n, where={"source": "avatars"})
    rule = split_rule(model)
    held_out, prompts, labels = _held_out(settings, rule)
    pipe = Pipeline.from_pretrained(vae or model)
    size = pipe.components.image_size
    frame = reference_framing(model)  # as `ldmkit eval` frames them: the model's recorded training framing
    real = [frame(held_out.image(i), size) for i in range(len(prompts))]
    notes: list[str] = []
    score = _avatars_scorer(settings, rule, prompts, labels, notes)
    if score is None:
        sys.exit("; ".join(notes) or "no avatars prompts to score")
    for name, images in (("real images", real), ("through the VAE", vae_round_trip(pipe, real))):
        table = score(images, range(len(prompts)))["all"]
        mean = table["mean"]
        per = ", ".join(f"{k} {v['estimate']:.2f}" for k, v in sorted(table["per_attribute"].items()))
        print(f"{name}: {mean['estimate']:.3f} [{mean['low']:.3f}, {mean['high']:.3f}] ({len(images)} images; {per})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model folder: split rule and attribute classifier")
    parser.add_argument("data", type=Path, help="dataset folder")
    parser.add_argument("--vae", type=Path, help="model folder whose VAE to round-trip through (default: MODEL's)")
    parser.add_argument("--n", type=int, default=200, help="held-out avatars to score (default 200)")
    args = parser.parse_args()
    main(args.model, args.data, args.n, args.vae)
