"""What free phrasing costs the model, image by image (issue 17; docs/quality.md "Free phrasing").

    ldmkit eval MODEL --data DATA --where source=avatars --n 200 --prompt-set free-avatars -o eval-free
    ldmkit eval MODEL --data DATA --where source=avatars --n 200 --prompt-set free-avatars-templates -o eval-tpl
    python scripts/free_phrasing_gap.py eval-free eval-tpl [--json gap.json] [--condition guidance=7.5]

Prints the attribute accuracy of both runs, their paired difference (bootstrap 95% interval over images),
and the accuracy per attribute and per word of the free prompts (weakest words first) beside the control's.
Runs made with `--sweep` hold several conditions: `--condition LABEL` picks one (the labels are listed if not).
"""

import argparse
import json
import sys
from pathlib import Path

from ldmkit.errors import UsageError
from ldmkit.evaluation.phrasing_gap import phrasing_gap


def fmt(ci: dict) -> str:
    if "low" not in ci:
        return f"{ci['estimate']:.2f}"
    return f"{ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def main(free: Path, control: Path, out: Path | None, condition: str | None = None) -> None:
    gap = phrasing_gap(free, control, condition=condition)
    excluded = ", ".join(gap["excluded"]) or "none"
    print(f"{gap['condition']}: {gap['images']} images; excluded (classifier < 95%): {excluded}")
    for name in ("free", "templates", "difference"):
        print(f"{name:>11}: {fmt(gap[name])}")
    print("\nper attribute (n, free, templates):")
    for name, row in gap["per_attribute"].items():
        print(f"  {name:<15} {row['n']:>4}  {fmt(row['free']):<24} {fmt(row['templates'])}")
    print("\nper word of the free prompts, weakest first (n, free, templates):")
    for name, row in sorted(gap["per_word"].items(), key=lambda kv: (kv[1]["free"]["estimate"], -kv[1]["n"])):
        print(f"  {name:<48} {row['n']:>3}  {fmt(row['free']):<24} {fmt(row['templates'])}")
    write_json(gap, out)


def write_json(numbers: dict, out: Path | None) -> None:
    """The numbers as JSON in `out`, a new file (an existing one is refused), when asked."""
    if out is not None:
        with open(out, "x", encoding="utf-8") as handle:
            json.dump(numbers, handle, indent=2)


def cli(doc: str, main, first: str, second: str, other_condition: bool = False) -> None:
    """Parse FIRST SECOND [--json FILE] [--condition LABEL] and run main(first, second, json, condition); with
    `other_condition`, also [--other-condition LABEL], passed on as main(..., other_condition=LABEL). A UsageError
    or an existing --json file is a one-line error."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("first", type=Path, help=first)
    parser.add_argument("second", type=Path, help=second)
    parser.add_argument("--json", type=Path, help="also write the numbers here (a new file)")
    parser.add_argument("--condition", help="the condition to compare in --sweep runs, e.g. guidance=7.5")
    if other_condition:
        parser.add_argument("--other-condition", help="the second run's condition, when it is not --condition: "
                            "two conditions of one --sweep run (name its folder twice), e.g. sampler=dpmpp_2m")
    args = parser.parse_args()
    if args.json is not None and args.json.exists():
        sys.exit(f"error: {args.json} exists; name a new file for --json")
    extra = {"other_condition": args.other_condition} if other_condition else {}
    try:
        main(args.first, args.second, args.json, args.condition, **extra)
    except (UsageError, FileExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    cli(__doc__, main, "eval folder of the free-avatars run", "eval folder of the free-avatars-templates run")
