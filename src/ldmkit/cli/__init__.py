"""Command line: parsing and printing only. `main(argv)` is what tests call.

Sub-commands live in one module each and register themselves with `register(subparsers)`.
Nothing here imports torch: `ldmkit --help` must stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ldmkit import __version__

# module name under ldmkit.cli -> registers its sub-commands
COMMAND_MODULES = ("generate", "model", "data", "train", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ldmkit",
        description="Text-to-image latent diffusion: data, training, generation, evaluation (offline).",
    )
    parser.add_argument("--version", action="version", version=f"ldmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"ldmkit.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ldmkit.errors import LdmkitError

    try:
        return int(args.func(args) or 0)
    except LdmkitError as err:
        print(f"ldmkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldmkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
