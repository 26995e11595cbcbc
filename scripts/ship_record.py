"""The evaluation record a shipped default model carries in ldmkit.json (`ldmkit model ship --metrics FILE`): every
eval folder under each given root (as `scripts/eval_issue17.sh` writes them), its settings and headline numbers
(with the attribute accuracy of the real avatars through the model's VAE where the eval measured it),
the paired attribute-accuracy difference against a base model where the root has vs-base-SET.json (`scripts/
model_gap.py --json`, as `scripts/eval_issue17.sh` writes it with BASE=), and the root's other reports (gap.txt,
routing.txt, ...) as text.

    python scripts/ship_record.py OUT.json --what "why these runs" ROOT [ROOT ...]

OUT.json's file name (without .json) becomes the key under ldmkit.json's "metrics". Nothing is written if an
eval folder cannot be read; an existing OUT.json is refused.
"""

import argparse
import json
import sys
from pathlib import Path

MAX_WHAT, MAX_ROOTS, MAX_REPORT_BYTES = 1000, 64, 1_000_000
"""Bounds of --what (characters), of the roots, and of one report file recorded whole."""
HEADLINE = ("clip_score", "retrieval_top1", "retrieval_top5", "fd", "kid", "cmmd")


def rounded(value: float) -> float:
    return float(f"{value:.4g}")


def run_record(folder: Path, root: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    settings = metrics["settings"]
    (condition,) = metrics["conditions"]
    first = condition["images"][0]
    found = condition["metrics"]
    record = {"run": folder.as_posix(), "set": folder.name, "n": settings["n"],
              "model_hash": metrics["environment"]["model_hash"],
              "settings": {"sampler": first["sampler"], "steps": first["steps"], "guidance": first["guidance"],
                           "seeds": settings["seeds"], "seed_per_image": bool(settings.get("seed_per_image"))}}
    for name in HEADLINE:
        if isinstance(found.get(name), dict):
            record[name] = rounded(found[name]["estimate"])
    if isinstance(found.get("fd_inf"), dict):  # FD-infinity, where the eval's sizes allowed it: with its interval
        record["fd_inf"] = [rounded(found["fd_inf"][k]) for k in ("estimate", "low", "high")]
    mean = (found.get("avatars") or {}).get("all", {}).get("mean")
    if mean:
        record["attribute_accuracy"] = [rounded(mean[k]) for k in ("estimate", "low", "high")]
    through_vae = ((metrics.get("reference") or {}).get("vae_round_trip") or {}).get("avatars") or {}
    mean = (through_vae.get("all") or {}).get("mean")
    if mean:  # the real images through the model's VAE: the ceiling its autoencoder allows
        record["vae_round_trip_accuracy"] = [rounded(mean[k]) for k in ("estimate", "low", "high")]
    gap = root / f"vs-base-{folder.name}.json"
    if gap.is_file():
        difference = json.loads(gap.read_text(encoding="utf-8"))["difference"]
        record["paired_vs_base"] = [rounded(difference[k]) for k in ("estimate", "low", "high")]
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--what", required=True, help="what the runs compare, recorded with them")
    parser.add_argument("roots", type=Path, nargs="+", help="folders holding one eval folder per set")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; choose another file", file=sys.stderr)
        return 2
    if not args.what.strip() or len(args.what) > MAX_WHAT:
        print(f"error: --what must be 1-{MAX_WHAT} characters, got {len(args.what)}", file=sys.stderr)
        return 2
    if len(args.roots) > MAX_ROOTS:
        print(f"error: at most {MAX_ROOTS} roots, got {len(args.roots)}", file=sys.stderr)
        return 2
    runs, reports = [], {}
    for root in args.roots:
        folders = sorted(p.parent for p in root.glob("*/metrics.json"))
        if not folders:
            print(f"error: {root} holds no eval folder (no */metrics.json)", file=sys.stderr)
            return 2
        try:
            runs += [run_record(folder, root) for folder in folders]
        except (OSError, ValueError, KeyError, IndexError) as err:
            print(f"error: cannot read the evals under {root}: {err!r}", file=sys.stderr)
            return 2
        for report in sorted(root.glob("*.txt")):
            if report.name.startswith("vs-base-"):
                continue
            if report.stat().st_size > MAX_REPORT_BYTES:
                print(f"error: {report} is over {MAX_REPORT_BYTES} bytes; not a report this records", file=sys.stderr)
                return 2
            reports[report.as_posix()] = report.read_text(encoding="utf-8")
    record = {"what": args.what, "runs": runs, "reports": reports}
    args.out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
