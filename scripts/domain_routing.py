"""Which domain free-prompt images land in, and what that costs (issue 17; docs/quality.md, "Why free phrasing
moved only with the shifted framing").

    ldmkit eval MODEL --data data/mix6000 --where source=avatars --prompt-set free-avatars --n 200 -o eval-free
    python scripts/domain_routing.py data/mix6000 eval-free [eval-free-2 ...] [--scorer src/ldmkit/default_model]

Each generated image of a `--prompt-set free-avatars` eval is matched to its nearest real image (the scorer's
dual-encoder features) among the first N avatars and N emoji of DATA, framed with `fill` as the default model
was trained. Prints, per eval folder, the share of images nearest to an emoji and the attribute accuracy (the
scorer's classifier, the eval's own prompts) of the avatar-like and the emoji-like images apart, and the same
for prompts that name a person ("a little person") and bare attribute lists ("profile pic: pink hair"), by how
many attributes a prompt names and by each attribute it names (a prompt naming two counts in both rows).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ldmkit.data.dataset import CaptionDataset
from ldmkit.data.trim import standardize
from ldmkit.errors import LdmkitError, UsageError
from ldmkit.evaluation.attributes import split_rule
from ldmkit.evaluation.avatars_score import find_attribute_classifier
from ldmkit.evaluation.features import find_dual_encoder, image_embeddings
from ldmkit.evaluation.free_prompts import free_prompt
from ldmkit.metrics.attribute_match import attribute_hits
from ldmkit.evaluation.run import EvalSettings, _held_out

MAX_REFERENCES = 2000
PERSON_WORDS = ("someone", "a cartoon character", "a cute avatar", "a friendly face", "a little person")


def references(data: Path, n: int, scorer: Path):
    """(dual encoder, [2n, D] embeddings of n real avatars then n real emoji, [2n] 1 where emoji)."""
    dual = find_dual_encoder(scorer, None)
    if dual is None:
        raise UsageError(f"{scorer} has no clip/ folder to match images with")
    dataset = CaptionDataset.open(data)
    rows = {source: [i for i, s in enumerate(dataset.samples) if s.labels.get("source") == source][:n]
            for source in ("avatars", "emoji")}
    if min(len(r) for r in rows.values()) < 1:
        raise UsageError(f"{data} needs both avatars and emoji rows (an emoji+avatars build)")
    chosen = rows["avatars"] + rows["emoji"]
    images = [standardize(dataset.image(i).convert("RGB"), 64, policy="fill")[0] for i in chosen]
    return dual, image_embeddings(dual, images), np.array([0] * len(rows["avatars"]) + [1] * len(rows["emoji"]))


def routing(folder: Path, dual, ref, is_emoji, scorer: Path) -> list[str]:
    run = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    s = run["settings"]
    if s.get("prompt_set") != "free-avatars":
        raise UsageError(f"{folder} is not a --prompt-set free-avatars eval")
    settings = EvalSettings(model=Path(s["model"]), data=Path(s["data"]), out=Path("unused"), split=s["split"],
                            n=s["n"], where=s["where"], prompt_set="free-avatars")
    _, _, labels = _held_out(settings, split_rule(settings.model))
    prompts = [free_prompt(row) for row in labels]
    classifier = find_attribute_classifier(settings.model, Path(s["attributes"]) if s.get("attributes") else scorer)
    if classifier is None:
        raise UsageError(f"no attribute classifier for {folder} (its model's, the run's --attributes or the scorer's)")
    records = run["conditions"][0]["images"]
    images = [Image.open(folder / r["file"]).convert("RGB") for r in records]
    emoji = is_emoji[(image_embeddings(dual, images) @ ref.T).argmax(1)]
    hits = attribute_hits(classifier, images, [prompts[r["prompt_index"]].asked for r in records])
    accuracy = np.array([np.mean(list(h.values())) if h else np.nan for h in hits])
    scored = ~np.isnan(accuracy)
    named = np.array([any(w in run["data"]["prompts"][r["prompt_index"]] for w in PERSON_WORDS) for r in records])

    def part(label, chosen):
        n = int(chosen.sum())
        share = f"{emoji[chosen].mean():.3f}" if n else "-"
        acc = f"{accuracy[chosen & scored].mean():.3f}" if (chosen & scored).any() else "-"
        return f"  {label:26s} n={n:4d}  nearest an emoji {share}  accuracy {acc}"

    asked = [prompts[r["prompt_index"]].asked for r in records]
    by_column = [part(f"names {column}", np.array([column in a for a in asked]))
                 for column in sorted({c for a in asked for c in a})]
    by_count = [part(f"names {k} attribute{'s' * (k > 1)}", np.array([len(a) == k for a in asked]))
                for k in sorted({len(a) for a in asked})]
    return [f"{folder} ({len(records)} images, {run['conditions'][0]['label']})",
            part("all", np.ones(len(records), bool)), part("avatar-like", emoji == 0), part("emoji-like", emoji == 1),
            part("prompt names a person", named), part("bare attribute list", ~named), *by_count, *by_column]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="an emoji+avatars dataset folder (the real references)")
    parser.add_argument("evals", type=Path, nargs="+", help="`ldmkit eval --prompt-set free-avatars` output folders")
    parser.add_argument("--scorer", type=Path, default=Path("src/ldmkit/default_model"),
                        help="folder with clip/ (matching) and attributes/ (default: the shipped model)")
    parser.add_argument("--n", type=int, default=300, help=f"real images per domain (1..{MAX_REFERENCES}, default 300)")
    args = parser.parse_args()
    try:
        if not 1 <= args.n <= MAX_REFERENCES:
            raise UsageError(f"--n must be in 1..{MAX_REFERENCES}, got {args.n}")
        missing = [str(f) for f in args.evals if not (f / "metrics.json").is_file()]
        if missing:
            raise UsageError(f"not an eval output folder (no metrics.json): {', '.join(missing)}")
        dual, ref, is_emoji = references(args.data, args.n, args.scorer)
        for folder in args.evals:
            print("\n".join(routing(folder, dual, ref, is_emoji, args.scorer)), flush=True)
    except (LdmkitError, OSError, KeyError, ValueError) as err:
        sys.exit(f"error: {err}")
