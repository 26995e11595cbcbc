"""`ldmkit data check|stats|build|preview`: parsing and printing only (ldmkit.data does the work)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ldmkit.errors import UsageError, shown

FORMAT_CHOICES = ("imagefolder", "coco", "flickr30k", "flickr8k", "sidecar", "classfolders")
"""Mirrors ldmkit.data.formats.FORMATS (not imported here: `ldmkit --help` must stay light)."""


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="check, describe, build and preview caption datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    check = sub.add_parser("check", help="read a dataset and report bad inputs by reason")
    _dataset_args(check)
    check.add_argument("--json", action="store_true",
                       help='print {"format", "images", "captions", "bad", ...} as JSON')
    check.add_argument("--max-bad-fraction", type=float, default=0.05,
                       help="exit status 1 when more than this fraction of images is unusable (default 0.05)")
    check.set_defaults(func=run_check)

    stats = sub.add_parser("stats", help="counts, caption and image-size statistics, plots")
    _dataset_args(stats)
    stats.add_argument("--out", type=Path, help="folder for stats.json and PNG plots")
    stats.add_argument("--json", action="store_true", help="print the statistics as JSON")
    stats.set_defaults(func=run_stats)

    build = sub.add_parser("build", help="write a built-in dataset (shapes, emoji, avatars, or a mixture)")
    build.add_argument("name", help="built-in dataset name: shapes, emoji or avatars, or a mixture joined with "
                                    "'+' such as emoji+avatars (one folder, a `source` label per image)")
    build.add_argument("out", type=Path, help="output folder (new, or an earlier build of the same dataset)")
    build.add_argument("--n", action="append", default=None, metavar="N|PART=N",
                       help="number of images (default: the dataset's own); for a mixture, PART=N sets one "
                            "part's count, e.g. --n avatars=2000 (repeatable)")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    build.add_argument("--phrasings", type=int, default=0, metavar="K",
                       help="add K free phrasings to each avatars image's captions (default 0; recipe key "
                            "data.builtin_phrasings)")
    build.add_argument("--phrasing-colours", action="store_true",
                       help="add only free phrasings that name every colour the avatar shows (hair or hat, "
                            "clothing; recipe key data.builtin_phrasing_colours)")
    build.add_argument("--phrasing-words", default="train", metavar="train|all",
                       help="words of the free phrasings: train (default; held out from the free-avatars eval's "
                            "words) or all (every synonym ldmkit knows; recipe key data.builtin_phrasing_words)")
    build.add_argument("--emoji-aliases", action="store_true",
                       help="add each emoji image's CLDR name and keywords as captions (needs Debian's "
                            "unicode-cldr-core; recipe key data.builtin_emoji_aliases)")
    build.set_defaults(func=run_build)

    preview = sub.add_parser("preview", help="contact sheet: originals with trim/crop boxes and results")
    preview.add_argument("dir", type=Path, help="dataset folder")
    preview.add_argument("-o", "--out", type=Path, default=None,
                         help="PNG to write (default: <folder name>-preview.png in the current folder)")
    preview.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    preview.add_argument("--size", type=int, default=64, help="standardized side in pixels (default 64)")
    trim = preview.add_mutually_exclusive_group()
    trim.add_argument("--trim", dest="trim", action="store_const", const=True, default=None,
                      help="cut uniform borders (recipe: data.trim.trim: true; the default, except for a built-in "
                           "dataset whose training default is no trim, such as shapes)")
    trim.add_argument("--no-trim", dest="trim", action="store_const", const=False,
                      help="keep uniform borders (recipe: data.trim.trim: false)")
    preview.add_argument("--focus", choices=("auto", "face", "saliency", "centre"), default="auto",
                         help="where a crop that cannot hold the whole subject goes (data.trim.focus; default auto)")
    preview.add_argument("--fit", choices=("crop", "pad", "fill"), default="crop",
                         help="crop to the square, pad the short side, or fill the square with the subject "
                              "(data.trim.fit; default crop)")
    preview.set_defaults(func=run_preview)


def _dataset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="dataset folder (or a COCO captions .json)")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default=None, help="skip format detection")
    parser.add_argument("--class-template", default="a photo of {}",
                        help="caption for class folders, {} is the class name (default 'a photo of {}')")


def run_check(args: argparse.Namespace) -> int:
    from ldmkit.data.dataset import CaptionDataset

    from ldmkit.data.report import accounting_line
    from ldmkit.errors import printable

    dataset = CaptionDataset.inspect(args.dir, format=args.format, class_template=args.class_template)
    tally = dataset.report.accounting(len(dataset))  # the same tally as `data stats`
    too_bad = not len(dataset) or tally["bad_fraction"] > args.max_bad_fraction
    if args.json:
        answer = {**dataset.summary(), **tally,
                  "converted": dict(sorted(dataset.report.converted.items())),
                  "examples": dataset.report.examples_dict()}
        print(json.dumps(answer, ensure_ascii=False))
    else:
        print(f"{printable(str(dataset.root))}: format {dataset.format}, {len(dataset)} usable images, "
              f"{dataset.num_captions()} captions")
        print(accounting_line(tally, args.max_bad_fraction))
        for line in dataset.report.lines():
            print(f"  {line}")
        if dataset.report.converted:
            print("converted: " + ", ".join(f"{k}: {n}" for k, n in sorted(dataset.report.converted.items())))
        if not len(dataset):
            print("verdict: no usable images")
        else:
            print("verdict: NOT usable (too many unusable images)" if too_bad else "verdict: usable")
    return 1 if too_bad else 0


def run_stats(args: argparse.Namespace) -> int:
    from ldmkit.data.dataset import CaptionDataset
    from ldmkit.data.stats import dataset_stats, require_matplotlib, stats_lines, write_stats

    if args.out is not None:
        require_matplotlib()  # before reading anything, let alone writing
    dataset = CaptionDataset.inspect(args.dir, format=args.format, class_template=args.class_template)
    stats = dataset_stats(dataset)
    if args.json:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        print("\n".join(stats_lines(stats)))
    if args.out is not None:
        written = write_stats(stats, args.out)
        if not args.json:
            print(f"wrote {len(written)} files to {args.out}")
    return 0


def parse_counts(items: list[str] | None) -> int | dict[str, int] | None:
    """--n values: None, one integer, or PART=N pairs (a mixture's per-part counts)."""
    if not items:
        return None
    if len(items) == 1 and "=" not in items[0]:
        try:
            return int(items[0])
        except ValueError:
            raise UsageError(f"--n {shown(items[0])}: expected an integer or PART=N") from None
    counts = {}
    for item in items:
        part, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            counts[part.strip()] = int(value)
        except ValueError:
            raise UsageError(f"--n {shown(item)}: with several --n, each must be PART=N such as avatars=2000") from None
    return counts


def run_build(args: argparse.Namespace) -> int:
    from ldmkit.data.builtin import build_dataset

    card = build_dataset(args.name, args.out, n=parse_counts(args.n), seed=args.seed, size=args.size,
                         phrasings=args.phrasings, emoji_aliases=args.emoji_aliases,
                         phrasing_colours=args.phrasing_colours, phrasing_words=args.phrasing_words)
    print(f"built {args.name} in {args.out}: {card.get('images', '?')} images, "
          f"{card.get('captions', '?')} captions (seed {args.seed})")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from ldmkit.data.builtin.single import card_border_trim
    from ldmkit.data.preview import preview_dataset

    out = args.out if args.out is not None else Path(f"{args.dir.resolve().name}-preview.png")
    trim = args.trim
    if trim is None:  # as a recipe on this folder would frame it
        declared = card_border_trim(args.dir)
        trim = True if declared is None else declared
        if not trim:
            print("border trim off: the built-in dataset's training default (--trim turns it on)")
    written = preview_dataset(args.dir, out, n=args.n, size=args.size, policy=args.fit, focus=args.focus, trim=trim)
    print(f"wrote {written}")
    return 0
