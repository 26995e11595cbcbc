"""Command line: parsing and printing only. `main(argv)` is what tests call.

Sub-commands live in one module each and register themselves with `register(subparsers)`.
Nothing here imports torch: `ldmkit --help` must stay fast, and the OpenMP wait policy must be set before a
command loads torch (ldmkit.cpu_threads).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ldmkit import __version__

# module name under ldmkit.cli -> registers its sub-commands
COMMAND_MODULES = ("generate", "model", "data", "train", "eval", "serve", "lora")


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


def flag_hint(err: Exception, args: argparse.Namespace) -> str:
    """"; TEXT" for an error that offers a flag (`err.flag_hint = (FLAG, TEXT)`, e.g. --allow-pickle), only when
    the command that ran has that flag: a hint never names a flag the user cannot pass (issue 12)."""
    flag, text = getattr(err, "flag_hint", None) or ("", "")
    return f"; {text}" if flag and hasattr(args, flag.lstrip("-").replace("-", "_")) else ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ldmkit.cpu_threads import fix_threads, prepare_openmp, requested_threads
    from ldmkit.errors import LdmkitError

    prepare_openmp(args.command)
    try:
        if args.command != "generate":  # generate sets (and restores) its own thread count
            fix_threads(requested_threads(getattr(args, "threads", None)))
        return int(args.func(args) or 0)
    except LdmkitError as err:
        print(f"ldmkit: error: {err}{flag_hint(err, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ldmkit: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as err:
        # the limits are estimates; a user who raised them (--max-pixels) can still run out of memory
        if not isinstance(err, MemoryError) and not _out_of_memory(err):
            raise
        print("ldmkit: error: out of memory; use a smaller size, --n or --batch (or the default limits, "
              "README 'Limits')", file=sys.stderr)
        return 2


def _out_of_memory(err: RuntimeError) -> bool:
    """torch reports a failed CPU/GPU allocation as a RuntimeError subclass with one of these phrases."""
    text = str(err).lower()
    return "out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
