"""Two models, or one model with two sampling settings, on the same held-out avatars, image by image (issue 17's
ship rule: a candidate against the shipped model): attribute accuracy of both, and their paired difference with
a bootstrap 95% interval over images.

    ldmkit eval src/ldmkit/default_model --attributes src/ldmkit/default_model ... -o eval-shipped
    ldmkit eval CANDIDATE --attributes src/ldmkit/default_model ... -o eval-candidate    # the same options
    python scripts/model_gap.py eval-shipped eval-candidate [--json gap.json] [--condition guidance=7.5]
    python scripts/model_gap.py eval-sweep eval-sweep --condition sampler=euler --other-condition sampler=dpmpp_2m

Both runs must share data, split, n, seeds, prompt set and the attribute classifier (`--attributes`); the model,
--steps, --sampler, --guidance, --guidance-rescale and --karras may differ (e.g. the shipped model with --sampler
euler_ancestral). A paired interval that excludes 0 is a difference these prompts can tell; two marginal intervals
that overlap say little. Two conditions of one `--sweep` run are paired the same way: name its folder twice, the
base's condition with --condition and the other's with --other-condition.
"""

from pathlib import Path

from free_phrasing_gap import cli, write_json  # this folder's sibling script: the same command line

from ldmkit.evaluation.phrasing_gap import model_gap


def fmt(ci: dict) -> str:
    return f"{ci['estimate']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"


def main(base: Path, other: Path, out: Path | None, condition: str | None = None,
         other_condition: str | None = None) -> None:
    gap = model_gap(base, other, condition=condition, other_condition=other_condition)
    print(f"{gap['condition']}: {gap['images']} images; excluded (classifier < 95%): {', '.join(gap['excluded']) or 'none'}")
    for name, model, sampling in zip(("base: ", "other:"), gap["models"], gap["sampling"]):
        chosen = ", ".join(f"{k} {v}" for k, v in sampling.items() if v is not None and v is not False) or "the model's defaults"
        print(f"  {name} {model} ({chosen})")
    print(f"{'':>15} {'n':>5}  {'base':<24} {'other':<24} other - base")
    rows = [("all", {"n": gap["images"], **{k: gap[k] for k in ("base", "other", "difference")}})]
    for name, row in [*rows, *gap["per_attribute"].items()]:
        print(f"{name:>15} {row['n']:>5}  {fmt(row['base']):<24} {fmt(row['other']):<24} {fmt(row['difference'])}")
    write_json(gap, out)


if __name__ == "__main__":
    cli(__doc__, main, "eval folder of the reference model (e.g. the shipped one)",
        "eval folder of the candidate, same settings", other_condition=True)
